//! Asynchronous invocations (`X-Amz-Invocation-Type: Event`): accepted into a durable
//! queue in the store, run within the function's concurrency limits, retried, and sent on
//! to a destination when they end.
//!
//! - [`Events::enqueue`] commits the event before the caller gets its 202.
//! - A worker claims due events (marking them running), runs each through the dispatcher
//!   under its own request id — the same on every attempt, so handlers can deduplicate —
//!   and records the [`retry`] decision. At startup, events left running by a stop are
//!   queued again: every event runs at least once.
//! - [`destination`] builds Lambda's destination record and turns it into the target's
//!   own asynchronous event, enqueued in the same transaction that ends the source event.

mod commit;
pub mod destination;
pub mod mapping;
pub mod pattern;
pub mod retry;
pub mod schedule;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ember_core::arn::Qualifier;
use ember_dispatch::{DispatchError, Dispatcher, FunctionError, InvokeRequest};
use ember_store::{AsyncEvent, EventInvokeConfig, EventWrite, Failure, Outbox, Store, StoreError};
use tokio::sync::{Notify, Semaphore};

use retry::{Attempt, Decision, Limits, RetryTiming};

/// Largest asynchronous payload, as on Lambda.
pub const EVENT_PAYLOAD_BYTES: usize = 256 * 1024;

/// How long an event waits for a concurrency slot of its function before it counts as
/// throttled and is retried later.
pub(crate) const CAPACITY_WAIT: Duration = Duration::from_secs(5);

/// Destination hops after which a chain of events is stopped, as Lambda's recursive-loop
/// detection does: a function that is its own destination (directly or through others)
/// would otherwise run forever.
pub const MAX_DEPTH: u32 = 16;

/// Settings of the event queue.
#[derive(Debug, Clone, Copy)]
pub struct EventSettings {
    pub timing: RetryTiming,
    /// Events running at once, over all functions.
    pub concurrency: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            timing: RetryTiming::default(),
            concurrency: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event queue failed")]
    Store(#[from] StoreError),
    #[error("an event-queue task failed: {0}")]
    Task(String),
    #[error("the event queue could not commit: {0}")]
    Commit(String),
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

struct Inner {
    store: Arc<Store>,
    committer: commit::Committer,
    dispatcher: Dispatcher,
    settings: EventSettings,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Set at shutdown: no more events are claimed.
    stopping: std::sync::atomic::AtomicBool,
    pollers: mapping::Pollers,
}

/// The event queue and its worker. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

impl Events {
    /// Puts back what a stop left running and starts the worker.
    pub fn start(
        store: Arc<Store>,
        dispatcher: Dispatcher,
        settings: EventSettings,
    ) -> Result<Events, EventError> {
        let requeued = store.requeue_running()?;
        if requeued > 0 {
            tracing::info!(
                requeued,
                "asynchronous events left running by the last stop are queued again"
            );
        }
        let committer = commit::Committer::start(Arc::clone(&store))
            .map_err(|e| EventError::Task(format!("could not start the commit thread: {e}")))?;
        let inner = Arc::new(Inner {
            store,
            committer,
            dispatcher,
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            wake: Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            pollers: mapping::Pollers::default(),
        });
        tokio::spawn(worker(Arc::clone(&inner)));
        tokio::spawn(scheduler(Arc::clone(&inner)));
        tokio::spawn(mapping::poller(Arc::clone(&inner)));
        Ok(Events { inner })
    }

    /// Stops claiming events and waits, at most `limit`, for the running ones to end.
    /// Events still running after that are queued again at the next start.
    pub async fn shutdown(&self, limit: Duration) {
        let inner = &self.inner;
        inner
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        inner.wake.notify_one();
        let all = u32::try_from(inner.settings.concurrency.max(1)).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(limit, inner.slots.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!(
                "asynchronous events still running at shutdown will run again at the next start"
            );
        }
    }

    /// Publishes events to the bus: each goes to every target (a function, as an
    /// asynchronous invocation, or a queue, as a message) of every enabled rule whose
    /// pattern it matches, all in one transaction. Returns each event's id, or why it was
    /// refused. Blocking.
    pub fn put_events(
        &self,
        entries: &[BusEntry],
    ) -> Result<Vec<Result<String, String>>, EventError> {
        let config = self.inner.dispatcher.config();
        let now = now_ms();
        let rules = self.inner.pattern_rules()?;
        let mut outbox = Outbox::default();
        let mut out = Vec::new();
        for entry in entries {
            match bus_event(entry, &config.region, &config.account, now) {
                Ok(event) => {
                    self.inner
                        .route_bus_event(&event, &rules, 0, now, &mut outbox)?;
                    out.push(Ok(event["id"].as_str().unwrap_or_default().to_owned()));
                }
                Err(why) => out.push(Err(why)),
            }
        }
        if !outbox.is_empty() {
            self.inner.store.deliver(&outbox, now)?;
            self.inner.wake.notify_one();
        }
        Ok(out)
    }

    /// Accepts an event for `function` (qualified or not) and returns its request id
    /// once the event is committed.
    pub async fn enqueue(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: &[u8],
    ) -> Result<String, EventError> {
        let event = new_event(function, qualifier, payload, now_ms(), 0);
        let id = event.request_id.clone();
        self.inner
            .committer
            .write(EventWrite::Enqueue(vec![event]))
            .await?;
        self.inner.wake.notify_one();
        Ok(id)
    }
}

fn new_event(
    function: &str,
    qualifier: Option<&str>,
    payload: &[u8],
    now: i64,
    depth: u32,
) -> AsyncEvent {
    AsyncEvent {
        request_id: uuid::Uuid::new_v4().to_string(),
        function: function.to_owned(),
        qualifier: qualifier.map(str::to_owned),
        payload: payload.to_vec(),
        enqueued_ms: now,
        not_before_ms: now,
        attempts: 0,
        depth,
    }
}

/// Runs a store call off the async workers.
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, EventError> {
    let store = Arc::clone(&inner.store);
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(EventError::Task(e.to_string())),
    }
}

/// Claims due events while there are free slots, runs each in its own task, and sleeps
/// until the next one is due or a new one arrives.
async fn worker(this: Arc<Inner>) {
    loop {
        let woken = this.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Wait for a free slot before claiming, so claimed events never wait for one.
        let Ok(first) = Arc::clone(&this.slots).acquire_owned().await else {
            return;
        };
        if this.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let free = this.slots.available_permits() + 1;
        // Each event's settings are read with the claim: one trip to the store for all.
        let claim = move |s: &Store| {
            let (due, next) = s.claim_due(now_ms(), free)?;
            let due: Vec<_> = due
                .into_iter()
                .map(|event| {
                    let config = config(s, &event);
                    (event, config)
                })
                .collect();
            Ok((due, next))
        };
        let (due, next) = match blocking(&this, claim).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %ember_core::error_chain(&e), "could not read the event queue");
                drop(first);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = due.len() == free;
        let mut first = Some(first);
        for (event, config) in due {
            let slot = match first.take() {
                Some(slot) => slot,
                None => match Arc::clone(&this.slots).acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let this = Arc::clone(&this);
            tokio::spawn(async move {
                this.run(event, config).await;
                drop(slot);
            });
        }
        drop(first);
        if full {
            continue;
        }
        let wait = match next {
            Some(at) => Duration::from_millis((at - now_ms()).clamp(0, 1000) as u64),
            None => Duration::from_secs(1),
        };
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The event invoke configuration that applies to an event: its qualifier's, else
/// `$LATEST`'s for an unqualified one.
fn config(store: &Store, event: &AsyncEvent) -> Option<EventInvokeConfig> {
    let qualifier = event.qualifier.as_deref().unwrap_or("$LATEST");
    match store.event_invoke_config(&event.function, qualifier) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %ember_core::error_chain(&e), function = %event.function, "could not read an event invoke configuration; using the defaults");
            None
        }
    }
}

/// How often the scheduler looks for due rules.
const SCHEDULER_TICK: Duration = Duration::from_millis(250);

/// Fires the scheduled rules that are due, each once for the latest time it missed.
async fn scheduler(this: Arc<Inner>) {
    loop {
        if this.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let fired = {
            let this = Arc::clone(&this);
            tokio::task::spawn_blocking(move || this.fire_due(now_ms())).await
        };
        match fired {
            Ok(Ok(0)) => {}
            Ok(Ok(_)) => this.wake.notify_one(),
            Ok(Err(e)) => {
                tracing::error!(error = %ember_core::error_chain(&e), "could not fire the scheduled rules")
            }
            Err(e) => tracing::error!(error = %e, "the scheduler task failed"),
        }
        tokio::time::sleep(SCHEDULER_TICK).await;
    }
}

impl Inner {
    /// Fires every enabled scheduled rule that is due at `now`; returns how many fired.
    fn fire_due(&self, now: i64) -> Result<usize, StoreError> {
        let mut fired = 0;
        for rule in self.store.rules()? {
            let Some(expression) = rule.schedule.as_deref().filter(|_| rule.enabled) else {
                continue;
            };
            let Ok(parsed) = schedule::Schedule::parse(expression) else {
                continue;
            };
            let Some(at) = schedule::due(&parsed, rule.created_ms, rule.last_fired_ms, now) else {
                continue;
            };
            let config = self.dispatcher.config();
            let payload = scheduled_event(&rule.name, at, &config.region, &config.account);
            let mut outbox = Outbox::default();
            for target in self.store.targets(&rule.name)? {
                let body = target.input.unwrap_or_else(|| payload.to_string());
                self.send(&target.arn, body, 0, now, &mut outbox);
            }
            if self.store.fire_rule(&rule.name, at, &outbox, now)? {
                fired += 1;
            }
        }
        Ok(fired)
    }

    async fn run(self: &Arc<Self>, event: AsyncEvent, config: Option<EventInvokeConfig>) {
        let limits = config.as_ref().map_or_else(Limits::default, |c| Limits {
            max_retry_attempts: c.max_retry_attempts,
            max_event_age: Duration::from_secs(u64::from(c.max_event_age_s)),
        });
        if retry::expired(event.enqueued_ms, now_ms(), &limits) {
            let failure = Failure {
                condition: retry::Condition::EventAgeExceeded.as_str().into(),
                response: None,
                error: "the event was older than its maximum age before it could run".into(),
            };
            self.fail(&event, config.as_ref(), failure, None).await;
            return;
        }
        let qualifier = match event.qualifier.as_deref().map(Qualifier::parse).transpose() {
            Ok(q) => q,
            Err(e) => {
                let failure = Failure {
                    condition: "InvalidQualifier".into(),
                    response: None,
                    error: e.to_string(),
                };
                self.fail(&event, config.as_ref(), failure, None).await;
                return;
            }
        };
        let config_arn = self.dispatcher.config();
        let invoked_arn = ember_core::arn::function_arn(
            &config_arn.region,
            &config_arn.account,
            &event.function,
            event.qualifier.as_deref(),
        );
        let result = self
            .dispatcher
            .invoke(
                &event.function,
                qualifier.as_ref(),
                InvokeRequest {
                    payload: Bytes::from(event.payload.clone()),
                    invoked_arn: Some(invoked_arn),
                    request_id: Some(event.request_id.clone()),
                    // A throttled event waits for a slot here before it is retried later.
                    wait_for_capacity: Some(CAPACITY_WAIT),
                    ..Default::default()
                },
            )
            .await;
        let now = now_ms();
        let (attempt, outcome) = match result {
            Ok(r) if r.function_error.is_none() => (Attempt::Succeeded, Ok(r)),
            Ok(r) => (Attempt::FunctionError, Ok(r)),
            Err(DispatchError::FunctionNotFound(what)) => {
                let failure = Failure {
                    condition: "FunctionNotFound".into(),
                    response: None,
                    error: format!("the function is gone: {what}"),
                };
                self.fail(&event, None, failure, None).await;
                return;
            }
            Err(e) => (Attempt::NotRun, Err(e)),
        };
        match retry::decide(
            attempt,
            event.attempts,
            event.enqueued_ms,
            now,
            &limits,
            &self.settings.timing,
        ) {
            Decision::Done => {
                let result = outcome.expect("a success has a result");
                let mut then = Outbox::default();
                if let Some(target) = config.as_ref().and_then(|c| c.on_success.as_deref()) {
                    self.destination(
                        target,
                        &event,
                        "Success",
                        event.attempts + 1,
                        Some(&result),
                        &mut then,
                    );
                }
                let stored = self
                    .committer
                    .write(EventWrite::Succeed {
                        request_id: event.request_id.clone(),
                        then,
                    })
                    .await;
                if let Err(e) = stored {
                    tracing::error!(error = %ember_core::error_chain(&e), request_id = %event.request_id, "could not record a finished event");
                }
                self.wake.notify_one();
            }
            Decision::RetryAt { at_ms, attempts } => {
                let (error, response) = describe(&outcome);
                let stored = self
                    .committer
                    .write(EventWrite::RetryLater {
                        request_id: event.request_id.clone(),
                        attempts,
                        not_before_ms: at_ms,
                        error,
                        response,
                    })
                    .await;
                if let Err(e) = stored {
                    tracing::error!(error = %ember_core::error_chain(&e), request_id = %event.request_id, "could not requeue an event");
                }
                self.wake.notify_one();
            }
            Decision::Fail(condition) => {
                let (error, response) = describe(&outcome);
                let failure = Failure {
                    condition: condition.as_str().into(),
                    response,
                    error,
                };
                let result = outcome.ok();
                self.fail(&event, config.as_ref(), failure, result.as_ref())
                    .await;
            }
        }
    }

    /// Ends an event as failed and sends it to its on-failure destination, if any.
    async fn fail(
        self: &Arc<Self>,
        event: &AsyncEvent,
        config: Option<&EventInvokeConfig>,
        failure: Failure,
        result: Option<&ember_dispatch::InvokeResult>,
    ) {
        tracing::warn!(function = %event.function, request_id = %event.request_id, condition = %failure.condition, error = %failure.error, "an asynchronous event failed");
        let count = event.attempts + u32::from(result.is_some());
        let mut then = Outbox::default();
        if let Some(target) = config.and_then(|c| c.on_failure.as_deref()) {
            self.destination(target, event, &failure.condition, count, result, &mut then);
        }
        // The function's dead-letter queue gets the event itself, as on Lambda.
        let dead_letter = {
            let this = Arc::clone(self);
            let e = event.clone();
            tokio::task::spawn_blocking(move || this.dead_letter_target(&e))
                .await
                .ok()
                .flatten()
        };
        if let Some(target) = dead_letter {
            let body = String::from_utf8_lossy(&event.payload).into_owned();
            self.send(&target, body, event.depth + 1, now_ms(), &mut then);
        }
        let stored = self
            .committer
            .write(EventWrite::Fail {
                request_id: event.request_id.clone(),
                failure,
                then,
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %ember_core::error_chain(&e), request_id = %event.request_id, "could not record a failed event");
        }
        self.wake.notify_one();
    }

    /// Sends Lambda's destination record for `event` to `target` (a function, a queue or
    /// the event bus), into `outbox`.
    fn destination(
        &self,
        target: &str,
        event: &AsyncEvent,
        condition: &str,
        invoke_count: u32,
        result: Option<&ember_dispatch::InvokeResult>,
        outbox: &mut Outbox,
    ) {
        if event.depth + 1 > MAX_DEPTH {
            tracing::warn!(function = %event.function, request_id = %event.request_id, %target,
                "a chain of {MAX_DEPTH} destination hops was stopped: it looks like a loop");
            return;
        }
        let config = self.dispatcher.config();
        let source_arn = ember_core::arn::function_arn(
            &config.region,
            &config.account,
            &event.function,
            Some(event.qualifier.as_deref().unwrap_or("$LATEST")),
        );
        let record = destination::record(&destination::Source {
            request_id: &event.request_id,
            function_arn: &source_arn,
            condition,
            invoke_count,
            request_payload: &event.payload,
            result,
            timestamp: SystemTime::now(),
        });
        let now = now_ms();
        if Sink::parse(target, &config.region, &config.account) == Some(Sink::Bus) {
            // On the bus the record is the detail of a Lambda result event.
            let outcome = if condition == "Success" {
                "Success"
            } else {
                "Failure"
            };
            let entry = BusEntry {
                source: Some("lambda".into()),
                detail_type: Some(format!("Lambda Function Invocation Result - {outcome}")),
                detail: Some(record.to_string()),
                resources: vec![source_arn],
            };
            let routed = bus_event(&entry, &config.region, &config.account, now)
                .map_err(|e| e.to_string())
                .and_then(|bus| {
                    let rules = self.pattern_rules().map_err(|e| e.to_string())?;
                    self.route_bus_event(&bus, &rules, event.depth + 1, now, outbox)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = routed {
                tracing::error!(error = %e, "a destination record could not go on the bus");
            }
            return;
        }
        self.send(target, record.to_string(), event.depth + 1, now, outbox);
    }

    /// The `DeadLetterConfig` target of the function version an event ran on.
    fn dead_letter_target(&self, event: &AsyncEvent) -> Option<String> {
        let version = match event.qualifier.as_deref().map(Qualifier::parse) {
            Some(Ok(Qualifier::Version(v))) => Some(v),
            Some(Ok(Qualifier::Alias(alias))) => {
                let alias = self.store.get_alias(&event.function, &alias).ok()?;
                alias.version.parse().ok()
            }
            _ => None,
        };
        let record = match version {
            Some(v) => self.store.get_version(&event.function, v).ok()?,
            None => self.store.get(&event.function).ok()?,
        };
        record.spec.dead_letter_target
    }

    /// Sends `body` to a function (as an asynchronous invocation) or a queue (as a message).
    fn send(&self, target: &str, body: String, depth: u32, now: i64, outbox: &mut Outbox) {
        let config = self.dispatcher.config();
        match Sink::parse(target, &config.region, &config.account) {
            Some(Sink::Function { name, qualifier }) => outbox.events.push(new_event(
                &name,
                qualifier.as_deref(),
                body.as_bytes(),
                now,
                depth,
            )),
            Some(Sink::Queue(queue)) => outbox.messages.push((queue, body)),
            Some(Sink::Bus) | None => {
                tracing::warn!(%target, "a target is neither a function nor a queue of this server");
            }
        }
    }

    /// The enabled rules with an event pattern.
    fn pattern_rules(&self) -> Result<Vec<(ember_store::Rule, pattern::Pattern)>, StoreError> {
        Ok(self
            .store
            .rules()?
            .into_iter()
            .filter(|r| r.enabled)
            .filter_map(|r| {
                let p = pattern::Pattern::parse(r.pattern.as_deref()?).ok()?;
                Some((r, p))
            })
            .collect())
    }

    /// Sends a bus event to the targets of every rule it matches.
    fn route_bus_event(
        &self,
        event: &serde_json::Value,
        rules: &[(ember_store::Rule, pattern::Pattern)],
        depth: u32,
        now: i64,
        outbox: &mut Outbox,
    ) -> Result<(), StoreError> {
        for (rule, pattern) in rules {
            if !pattern.matches(event) {
                continue;
            }
            for target in self.store.targets(&rule.name)? {
                let body = target.input.unwrap_or_else(|| event.to_string());
                self.send(&target.arn, body, depth, now, outbox);
            }
        }
        Ok(())
    }
}

/// Where an ARN delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Function {
        name: String,
        qualifier: Option<String>,
    },
    /// A queue, by name.
    Queue(String),
    /// The default event bus.
    Bus,
}

impl Sink {
    /// What `arn` names on this server (region and account), if anything.
    pub fn parse(arn: &str, region: &str, account: &str) -> Option<Sink> {
        if let Some(name) = arn.strip_prefix(&format!("arn:aws:sqs:{region}:{account}:")) {
            return (!name.is_empty() && !name.contains(':')).then(|| Sink::Queue(name.to_owned()));
        }
        if arn == format!("arn:aws:events:{region}:{account}:event-bus/default") {
            return Some(Sink::Bus);
        }
        let reference = ember_core::arn::FunctionRef::parse(arn, region, account).ok()?;
        Some(Sink::Function {
            name: reference.name,
            qualifier: reference.qualifier.map(|q| q.to_string()),
        })
    }
}

/// One event published with `PutEvents`.
#[derive(Debug, Clone, Default)]
pub struct BusEntry {
    pub source: Option<String>,
    pub detail_type: Option<String>,
    /// A JSON object, as text.
    pub detail: Option<String>,
    pub resources: Vec<String>,
}

/// The event EventBridge delivers for an entry, or why the entry is refused.
fn bus_event(
    entry: &BusEntry,
    region: &str,
    account: &str,
    now: i64,
) -> Result<serde_json::Value, String> {
    let source = entry
        .source
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or("Source is required")?;
    let detail_type = entry
        .detail_type
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or("DetailType is required")?;
    let detail: serde_json::Value =
        serde_json::from_str(entry.detail.as_deref().ok_or("Detail is required")?)
            .map_err(|_| "Detail must be a JSON object".to_owned())?;
    if !detail.is_object() {
        return Err("Detail must be a JSON object".into());
    }
    let at = UNIX_EPOCH + Duration::from_millis(now.max(0) as u64);
    let stamp = ember_core::time::lambda_timestamp(at);
    Ok(serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": format!("{}Z", &stamp[..19]),
        "region": region,
        "resources": entry.resources,
        "detail": detail,
    }))
}

/// What a scheduled rule sends its targets, as EventBridge does; `time` is the scheduled
/// time, not the moment it was sent.
pub fn scheduled_event(rule: &str, at_ms: i64, region: &str, account: &str) -> serde_json::Value {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms.max(0) as u64);
    let stamp = ember_core::time::lambda_timestamp(at);
    // Seconds precision, `Z`: 2019-10-08T16:53:06Z.
    let time = format!("{}Z", &stamp[..19]);
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time,
        "region": region,
        "resources": [format!("arn:aws:events:{region}:{account}:rule/{rule}")],
        "detail": {},
    })
}

/// Hex MD5 of a message body, as SQS reports it.
pub fn md5_hex(text: &str) -> String {
    use md5::Digest;
    let digest = md5::Md5::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last error of an attempt, for a person and for the record.
fn describe(
    outcome: &Result<ember_dispatch::InvokeResult, DispatchError>,
) -> (String, Option<Vec<u8>>) {
    match outcome {
        Ok(r) => {
            let kind = r.function_error.map_or("", FunctionError::as_str);
            let text = String::from_utf8_lossy(&r.body);
            (
                format!("{kind} function error: {text}"),
                Some(r.body.to_vec()),
            )
        }
        Err(e) => (ember_core::error_chain(e), None),
    }
}
