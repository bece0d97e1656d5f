//! The control plane's function registry: validates, stores, and tells the dispatcher.
//!
//! Every change goes store first, then dispatcher: a function the dispatcher runs is always
//! one the store holds, so a restart finds what was running. Changes are serialized by one
//! lock (they are rare and fast next to invocations, which never take it). Methods are
//! blocking (SQLite, unpacking a package): the API calls them off the async workers.
//!
//! `$LATEST` is the mutable function; publishing snapshots it as an immutable numbered
//! version with its own warm pool. Aliases name a version and may send a weighted share of
//! calls to a second one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ember_core::arn::{
    Qualifier, layer_arn, parse_layer_version_arn, validate_alias_name, validate_layer_name,
};
use ember_core::function::validate_name;
use ember_core::usage::{DayUsage, Prices};
use ember_core::{FunctionSpec, FunctionUpdate, RuntimeFamily};
use ember_dispatch::{AliasRoute, Deployment, Dispatcher, ProvisionedState};
use ember_store::archive::has_executable_bootstrap;
use ember_store::{
    AliasRecord, Artifacts, EventInvokeConfig, FunctionRecord, LayerRecord, ProvisionedRecord,
    Store, StoreError, UrlConfig,
};

use crate::cors::Cors;
use crate::error::ApiError;

/// A function URL as served: its configuration and its `Cors`, read once.
pub(crate) struct ServedUrl {
    pub config: UrlConfig,
    pub cors: Option<Cors>,
}

pub struct Registry {
    store: std::sync::Arc<Store>,
    artifacts: Artifacts,
    dispatcher: Dispatcher,
    prices: Prices,
    /// Function URLs by their path id (`NAME` or `NAME:ALIAS`): read on every URL call, with
    /// a hash that is fast on short ids.
    urls: std::sync::RwLock<HashMap<String, Arc<ServedUrl>, foldhash::fast::RandomState>>,
    /// HTTP routes, parsed: read on every routed call.
    routes: std::sync::RwLock<Vec<(crate::routes::RouteKey, ember_store::RouteRecord)>>,
    changes: Mutex<()>,
}

/// A requested alias configuration, before validation.
#[derive(Debug, Clone, Default)]
pub struct AliasChange {
    pub version: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` clears the routing; `None` leaves it as it is.
    pub routing: Option<Option<(String, f64)>>,
}

impl Registry {
    /// Opens the registry and deploys every stored function, version and alias.
    pub fn load(
        store: std::sync::Arc<Store>,
        artifacts: Artifacts,
        dispatcher: Dispatcher,
        prices: Prices,
    ) -> Result<Registry, ApiError> {
        let registry = Registry {
            store,
            artifacts,
            dispatcher,
            prices,
            urls: std::sync::RwLock::new(HashMap::default()),
            routes: std::sync::RwLock::new(Vec::new()),
            changes: Mutex::new(()),
        };
        registry.reload_routes()?;
        for url in registry.store.urls(None)? {
            registry.cache_url(url);
        }
        for record in registry.store.list()? {
            registry.deploy(&record);
            for version in registry.store.list_versions(&record.spec.name)? {
                registry.deploy(&version);
            }
        }
        for alias in registry.store.list_aliases("*")? {
            registry.route(&alias);
        }
        for (function, reserved) in registry.store.reserved_concurrency()? {
            registry.dispatcher.restore_reservation(&function, reserved);
        }
        for record in registry.store.list()? {
            registry.apply_provisioned(&record.spec.name)?;
        }
        Ok(registry)
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The store, for the event queue's configuration calls.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// Moves the usage the dispatcher recorded into the store. What cannot be stored is
    /// logged and dropped: usage never blocks invocations.
    pub fn flush_usage(&self) {
        let usage = self.dispatcher.take_usage();
        if usage.is_empty() {
            return;
        }
        if let Err(e) = self.store.add_usage(&usage) {
            tracing::error!(error = %e, records = usage.len(), "could not store usage");
        }
    }

    /// Usage from day `since` (`YYYY-MM-DD`) on, of one function or all, up to this moment.
    pub fn billed_usage(
        &self,
        function: Option<&str>,
        since: &str,
    ) -> Result<Vec<DayUsage>, ApiError> {
        self.flush_usage();
        Ok(self.store.usage(function, since)?)
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    fn deploy(&self, record: &FunctionRecord) {
        let layer_dirs = record
            .spec
            .layers
            .iter()
            .filter_map(|arn| match self.layer_of(arn) {
                Ok(layer) => Some(self.artifacts.code_dir(&layer.code_sha256)),
                Err(e) => {
                    tracing::warn!(function = %record.spec.name, layer = %arn, error = %e, "a layer is missing");
                    None
                }
            })
            .collect();
        self.dispatcher.deploy(Deployment {
            spec: record.spec.clone(),
            code_dir: self.artifacts.code_dir(&record.code_sha256),
            layer_dirs,
            version: record.version,
        });
    }

    /// The layer version an ARN names (deleted versions included: functions keep them).
    fn layer_of(&self, arn: &str) -> Result<LayerRecord, ApiError> {
        let config = self.dispatcher.config();
        let not_found = || ApiError::NotFound(format!("Layer version {arn} does not exist"));
        let (name, version) = parse_layer_version_arn(arn).ok_or_else(not_found)?;
        if layer_arn(&config.region, &config.account, &name, Some(version)) != arn {
            return Err(not_found());
        }
        self.store
            .get_layer(&name, version)
            .map_err(|_| not_found())
    }

    /// Checks a function's layers: each exists (a newly added one must not be deleted), and
    /// code plus layers unpack to at most 250 MB.
    fn check_layers(
        &self,
        spec: &FunctionSpec,
        code_sha256: &str,
        before: &[String],
    ) -> Result<(), ApiError> {
        let mut total =
            ember_store::artifacts::unpacked_size(&self.artifacts.code_dir(code_sha256));
        for arn in &spec.layers {
            let layer = self
                .layer_of(arn)
                .map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
            if layer.deleted && !before.contains(arn) {
                return Err(ApiError::InvalidParameter(format!(
                    "Layer version {arn} was deleted; use another version"
                )));
            }
            total += layer.unpacked_size;
        }
        if total > ember_core::limits::UNZIPPED_BYTES {
            return Err(ApiError::InvalidParameter(format!(
                "Function code combined with layers exceeds the maximum allowed size of {} bytes (got {total})",
                ember_core::limits::UNZIPPED_BYTES
            )));
        }
        Ok(())
    }

    /// `Layers` of a function's configuration: each ARN and its package size.
    pub fn layer_sizes(&self, spec: &FunctionSpec) -> Vec<(String, u64)> {
        spec.layers
            .iter()
            .map(|arn| (arn.clone(), self.layer_of(arn).map_or(0, |l| l.code_size)))
            .collect()
    }

    pub fn layer_arn(&self, name: &str, version: Option<u32>) -> String {
        let config = self.dispatcher.config();
        layer_arn(&config.region, &config.account, name, version)
    }

    /// Publishes a new version of a layer from a zip.
    pub fn publish_layer(
        &self,
        name: &str,
        zip: &[u8],
        description: String,
        compatible_runtimes: Vec<String>,
        license: String,
    ) -> Result<LayerRecord, ApiError> {
        if !validate_layer_name(name) {
            return Err(ApiError::InvalidParameter(format!(
                "layer name {name:?} is not valid: use 1 to 140 letters, digits, '-' and '_'"
            )));
        }
        let _guard = self.changes.lock().expect("registry lock");
        let artifact = self.artifacts.put(zip)?;
        let mut record = LayerRecord {
            name: name.to_owned(),
            version: 0,
            description,
            compatible_runtimes,
            license,
            code_sha256: artifact.sha256.clone(),
            code_size: artifact.size,
            unpacked_size: ember_store::artifacts::unpacked_size(
                &self.artifacts.code_dir(&artifact.sha256),
            ),
            created: ember_core::time::lambda_timestamp(SystemTime::now()),
            deleted: false,
        };
        record.version = self.store.insert_layer(&record)?;
        Ok(record)
    }

    pub fn get_layer(&self, name: &str, version: u32) -> Result<LayerRecord, ApiError> {
        self.store
            .get_layer(name, version)
            .ok()
            .filter(|l| !l.deleted)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "Layer version {} does not exist",
                    self.layer_arn(name, Some(version))
                ))
            })
    }

    /// Live versions of one layer (`"*"`: of every layer), oldest first.
    pub fn list_layer_versions(&self, name: &str) -> Result<Vec<LayerRecord>, ApiError> {
        Ok(self
            .store
            .list_layers(name)?
            .into_iter()
            .filter(|l| !l.deleted)
            .collect())
    }

    /// Deletes a layer version. Functions that use it keep it (as on Lambda); it can no
    /// longer be added to a function. Its number is never reused.
    pub fn delete_layer(&self, name: &str, version: u32) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.get_layer(name, version)?;
        self.store.mark_layer_deleted(name, version)?;
        Ok(())
    }

    fn route(&self, alias: &AliasRecord) {
        let version = |v: &str| v.parse::<u32>().ok();
        self.dispatcher.set_alias(
            &alias.function,
            &alias.name,
            AliasRoute {
                version: version(&alias.version),
                additional: alias
                    .routing
                    .as_ref()
                    .and_then(|(v, w)| Some((version(v)?, *w))),
            },
        );
    }

    /// The function's ARN, qualified when `qualifier` is given.
    pub fn arn(&self, name: &str, qualifier: Option<&str>) -> String {
        let config = self.dispatcher.config();
        ember_core::arn::function_arn(&config.region, &config.account, name, qualifier)
    }

    /// The ARN a record is reported under: versions carry their number.
    pub fn record_arn(&self, record: &FunctionRecord) -> String {
        self.arn(
            &record.spec.name,
            record.version.map(|v| v.to_string()).as_deref(),
        )
    }

    fn not_found(&self, name: &str, qualifier: Option<&Qualifier>) -> ApiError {
        ApiError::FunctionNotFound(self.arn(name, qualifier.map(|q| q.to_string()).as_deref()))
    }

    fn validate(&self, spec: &FunctionSpec) -> Result<(), ApiError> {
        spec.validate(&self.dispatcher.available_runtimes())?;
        if let Some(target) = &spec.dead_letter_target {
            let config = self.dispatcher.config();
            match ember_events::Sink::parse(target, &config.region, &config.account) {
                Some(ember_events::Sink::Queue(name)) if self.store.queue(&name)?.is_some() => {}
                _ => {
                    return Err(ApiError::InvalidParameter(format!(
                        "DeadLetterConfig.TargetArn {target:?} must be the ARN of an existing queue of this server"
                    )));
                }
            }
        }
        self.dispatcher.backends().check(spec.backend())?;
        self.dispatcher.backends().check_network(spec.network)?;
        Ok(())
    }

    /// Checks a package against the function that will run it.
    fn check_package(&self, spec: &FunctionSpec, sha256: &str) -> Result<(), ApiError> {
        if spec.family() == RuntimeFamily::Wasm {
            let backend = self
                .dispatcher
                .backends()
                .get(spec.backend())
                .map_err(|e| ApiError::InvalidParameter(format!("{e}")))?;
            return backend
                .prepare(&self.artifacts.code_dir(sha256), &spec.handler)
                .map_err(ApiError::InvalidParameter);
        }
        if spec.family() == RuntimeFamily::Provided
            && !has_executable_bootstrap(&self.artifacts.code_dir(sha256))
        {
            return Err(ApiError::InvalidParameter(format!(
                "runtime {} needs an executable file named bootstrap at the root of the package; \
                 add it and set its executable bit (chmod +x bootstrap) before zipping",
                spec.runtime
            )));
        }
        Ok(())
    }

    /// Removes a package's files if no function or version uses it any more.
    fn collect_garbage(&self, sha256: &str) {
        if !self.store.code_in_use(sha256).unwrap_or(true) {
            self.artifacts.remove(sha256);
        }
    }

    fn record(spec: FunctionSpec, code_sha256: String, code_size: u64) -> FunctionRecord {
        FunctionRecord {
            version: None,
            spec,
            code_sha256,
            code_size,
            revision_id: uuid::Uuid::new_v4().to_string(),
            last_modified: ember_core::time::lambda_timestamp(SystemTime::now()),
        }
    }

    /// Creates a function; with `publish`, also its version 1.
    pub fn create(
        &self,
        spec: FunctionSpec,
        zip: &[u8],
        publish: bool,
    ) -> Result<FunctionRecord, ApiError> {
        self.validate(&spec)?;
        let guard = self.changes.lock().expect("registry lock");
        if self.store.get(&spec.name).is_ok() {
            return Err(ApiError::FunctionExists(spec.name));
        }
        let artifact = self.artifacts.put(zip)?;
        let stored = self.check_package(&spec, &artifact.sha256).and_then(|()| {
            self.check_layers(&spec, &artifact.sha256, &[])?;
            let record = Self::record(spec, artifact.sha256.clone(), artifact.size);
            self.store.create(&record)?;
            Ok(record)
        });
        let record = match stored {
            Ok(record) => record,
            Err(e) => {
                self.collect_garbage(&artifact.sha256);
                return Err(e);
            }
        };
        self.deploy(&record);
        drop(guard);
        if publish {
            return self.publish(&record.spec.name, None, None);
        }
        Ok(record)
    }

    /// `$LATEST`, a version, or the version an alias names.
    pub fn get(
        &self,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<FunctionRecord, ApiError> {
        validate_name(name).map_err(|_| self.not_found(name, qualifier))?;
        let found = match qualifier {
            None | Some(Qualifier::Latest) => self.store.get(name),
            Some(Qualifier::Version(v)) => self.store.get_version(name, *v),
            Some(Qualifier::Alias(alias)) => {
                let alias = self
                    .store
                    .get_alias(name, alias)
                    .map_err(|_| self.not_found(name, qualifier))?;
                match alias.version.parse() {
                    Ok(v) => self.store.get_version(name, v),
                    Err(_) => self.store.get(name),
                }
            }
        };
        found.map_err(|e| match e {
            StoreError::NotFound(_) => self.not_found(name, qualifier),
            other => other.into(),
        })
    }

    pub fn list(&self) -> Result<Vec<FunctionRecord>, ApiError> {
        Ok(self.store.list()?)
    }

    pub fn update_code(
        &self,
        name: &str,
        zip: &[u8],
        revision: Option<&str>,
        publish: bool,
    ) -> Result<FunctionRecord, ApiError> {
        let guard = self.changes.lock().expect("registry lock");
        let old = self.get(name, None)?;
        check_revision(&old.revision_id, revision)?;
        let artifact = self.artifacts.put(zip)?;
        let result = self
            .check_package(&old.spec, &artifact.sha256)
            .and_then(|()| {
                let record = Self::record(old.spec.clone(), artifact.sha256.clone(), artifact.size);
                self.store.update(&record)?;
                Ok(record)
            });
        let record = match result {
            Ok(record) => record,
            Err(e) => {
                if artifact.sha256 != old.code_sha256 {
                    self.collect_garbage(&artifact.sha256);
                }
                return Err(e);
            }
        };
        self.deploy(&record);
        if record.code_sha256 != old.code_sha256 {
            self.collect_garbage(&old.code_sha256);
        }
        drop(guard);
        if publish {
            return self.publish(name, None, None);
        }
        Ok(record)
    }

    pub fn update_config(
        &self,
        name: &str,
        update: FunctionUpdate,
        revision: Option<&str>,
    ) -> Result<FunctionRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let old = self.get(name, None)?;
        check_revision(&old.revision_id, revision)?;
        let spec = old.spec.updated(update);
        self.validate(&spec)?;
        self.check_package(&spec, &old.code_sha256)?;
        self.check_layers(&spec, &old.code_sha256, &old.spec.layers)?;
        let record = Self::record(spec, old.code_sha256.clone(), old.code_size);
        self.store.update(&record)?;
        self.deploy(&record);
        Ok(record)
    }

    /// Publishes `$LATEST` as a new version — or, when nothing changed since the latest
    /// version, returns that one (as Lambda does).
    pub fn publish(
        &self,
        name: &str,
        description: Option<String>,
        revision: Option<&str>,
    ) -> Result<FunctionRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let latest = self.get(name, None)?;
        check_revision(&latest.revision_id, revision)?;
        if let Some(newest) = self.store.list_versions(name)?.pop() {
            let unchanged = newest.code_sha256 == latest.code_sha256
                && FunctionSpec {
                    description: latest.spec.description.clone(),
                    ..newest.spec.clone()
                } == latest.spec;
            if unchanged {
                return Ok(newest);
            }
        }
        let mut record = Self::record(
            latest.spec.clone(),
            latest.code_sha256.clone(),
            latest.code_size,
        );
        if let Some(description) = description {
            record.spec.description = description;
        }
        let version = self.store.insert_version(&record)?;
        record.version = Some(version);
        self.deploy(&record);
        Ok(record)
    }

    /// `$LATEST` followed by every published version.
    pub fn list_versions(&self, name: &str) -> Result<Vec<FunctionRecord>, ApiError> {
        let latest = self.get(name, None)?;
        let mut all = vec![latest];
        all.extend(self.store.list_versions(name)?);
        Ok(all)
    }

    /// Deletes the function (no qualifier) or one published version.
    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency.
    pub fn set_reserved_concurrency(
        &self,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.get(name, None)?;
        let provisioned: u32 = self
            .store
            .list_provisioned(Some(name))?
            .iter()
            .map(|c| c.requested)
            .sum();
        if let Some(reserved) = reserved
            && reserved < provisioned
        {
            return Err(ApiError::InvalidParameter(format!(
                "ReservedConcurrentExecutions ({reserved}) must be at least the function's \
                 provisioned concurrency ({provisioned}); lower that first"
            )));
        }
        let previous = self.dispatcher.reserved(name);
        self.dispatcher
            .reserve(name, reserved)
            .map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
        if let Err(e) = self.store.set_reserved_concurrency(name, reserved) {
            // Keep the dispatcher and the store in agreement.
            let _ = self.dispatcher.reserve(name, previous);
            return Err(e.into());
        }
        Ok(())
    }

    /// The version a provisioned concurrency configuration applies to: a published
    /// version, or the one an unweighted alias names.
    fn provisioned_version(&self, name: &str, qualifier: &str) -> Result<u32, ApiError> {
        let unpublished = || {
            ApiError::InvalidParameter(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions \
                 ($LATEST); publish a version and use its number or an alias"
                    .into(),
            )
        };
        match Qualifier::parse(qualifier)? {
            Qualifier::Latest => Err(unpublished()),
            Qualifier::Version(v) => {
                self.get(name, Some(&Qualifier::Version(v)))?;
                Ok(v)
            }
            Qualifier::Alias(alias) => {
                let alias = self.get_alias(name, &alias)?;
                if alias.routing.is_some() {
                    return Err(ApiError::InvalidParameter(format!(
                        "the alias {} routes a weighted share of calls to a second version; \
                         provisioned concurrency applies to an alias that names one version",
                        alias.name
                    )));
                }
                alias.version.parse().map_err(|_| unpublished())
            }
        }
    }

    /// Serializes control-plane changes.
    pub(crate) fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().expect("registry lock")
    }

    /// Reads the routes from the store into memory.
    pub(crate) fn reload_routes(&self) -> Result<(), ApiError> {
        let parsed = self
            .store
            .routes()?
            .into_iter()
            .filter_map(|r| Some((crate::routes::RouteKey::parse(&r.route_key).ok()?, r)))
            .collect();
        *self.routes.write().expect("routes lock") = parsed;
        Ok(())
    }

    /// The route serving `method path`, and its path parameters.
    pub fn route_for(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(ember_store::RouteRecord, BTreeMap<String, String>)> {
        let routes = self.routes.read().expect("routes lock");
        crate::routes::find(&routes, method, path).map(|(r, p)| (r.clone(), p))
    }

    fn cache_url(&self, config: UrlConfig) {
        let id = crate::urls::url_id(&config.function, &config.qualifier);
        let cors = config.cors.as_deref().and_then(Cors::load);
        let served = Arc::new(ServedUrl { config, cors });
        self.urls.write().expect("urls lock").insert(id, served);
    }

    /// The URL configuration served under a path id, from memory.
    pub(crate) fn url_by_id(&self, id: &str) -> Option<Arc<ServedUrl>> {
        self.urls.read().expect("urls lock").get(id).cloned()
    }

    /// Creates (`create`, refused if it exists) or updates (refused if it does not) a
    /// function URL on `$LATEST` or an alias.
    pub fn put_url(
        &self,
        function: &str,
        qualifier: &str,
        auth_type: String,
        cors: Option<String>,
        create: bool,
    ) -> Result<UrlConfig, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let q = if qualifier == "$LATEST" {
            None
        } else {
            Some(Qualifier::Alias(qualifier.to_owned()))
        };
        self.get(function, q.as_ref())?;
        let existing = self
            .store
            .urls(Some(function))?
            .into_iter()
            .find(|u| u.qualifier == qualifier);
        let now = ember_core::time::lambda_timestamp(SystemTime::now());
        let config = match (existing, create) {
            (Some(_), true) => {
                return Err(ApiError::Conflict(format!(
                    "Failed to create function url config for [functionArn = {}]. Error message: FunctionUrlConfig exists for this Lambda function",
                    self.arn(function, q.as_ref().map(|_| qualifier))
                )));
            }
            (None, false) => return Err(self.url_not_found(function, qualifier)),
            (Some(old), false) => UrlConfig {
                auth_type,
                cors,
                modified: now,
                ..old
            },
            (None, true) => UrlConfig {
                function: function.to_owned(),
                qualifier: qualifier.to_owned(),
                auth_type,
                cors,
                created: now.clone(),
                modified: now,
            },
        };
        self.store.put_url(&config)?;
        self.cache_url(config.clone());
        Ok(config)
    }

    fn url_not_found(&self, function: &str, qualifier: &str) -> ApiError {
        ApiError::NotFound(format!(
            "The resource you requested does not exist: no function URL for {}",
            self.arn(function, (qualifier != "$LATEST").then_some(qualifier))
        ))
    }

    pub fn url(&self, function: &str, qualifier: &str) -> Result<UrlConfig, ApiError> {
        self.get(function, None)?;
        self.url_by_id(&crate::urls::url_id(function, qualifier))
            .filter(|u| u.config.function == function)
            .map(|u| u.config.clone())
            .ok_or_else(|| self.url_not_found(function, qualifier))
    }

    pub fn urls(&self, function: &str) -> Result<Vec<UrlConfig>, ApiError> {
        self.get(function, None)?;
        Ok(self.store.urls(Some(function))?)
    }

    pub fn delete_url(&self, function: &str, qualifier: &str) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.url(function, qualifier)?;
        self.store.delete_url(function, qualifier)?;
        self.urls
            .write()
            .expect("urls lock")
            .remove(&crate::urls::url_id(function, qualifier));
        Ok(())
    }

    /// Creates or replaces a function's asynchronous invocation settings for a qualifier
    /// (`$LATEST`, a version or an alias), checking that its destinations exist here.
    pub fn put_event_invoke_config(
        &self,
        config: EventInvokeConfig,
    ) -> Result<EventInvokeConfig, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let qualifier = Qualifier::parse(&config.qualifier)?;
        self.get(&config.function, Some(&qualifier))?;
        for target in [&config.on_success, &config.on_failure]
            .into_iter()
            .flatten()
        {
            self.check_sink(target, true)?;
        }
        self.store.put_event_invoke_config(&config)?;
        Ok(config)
    }

    /// Checks that `target` is a function or a queue of this server (or, with `bus`, the
    /// default event bus).
    pub(crate) fn check_sink(&self, target: &str, bus: bool) -> Result<(), ApiError> {
        let dispatch = self.dispatcher.config();
        let missing =
            || ApiError::InvalidParameter(format!("destination {target:?} does not exist"));
        match ember_events::Sink::parse(target, &dispatch.region, &dispatch.account) {
            Some(ember_events::Sink::Function { name, qualifier }) => {
                let qualifier = qualifier.as_deref().map(Qualifier::parse).transpose()?;
                self.get(&name, qualifier.as_ref())
                    .map(|_| ())
                    .map_err(|_| missing())
            }
            Some(ember_events::Sink::Queue(name)) => {
                self.store.queue(&name)?.map(|_| ()).ok_or_else(missing)
            }
            Some(ember_events::Sink::Bus) if bus => Ok(()),
            _ => Err(ApiError::InvalidParameter(format!(
                "{target:?} must be the ARN of a function or a queue of this server{}",
                if bus {
                    ", or of its default event bus"
                } else {
                    ""
                }
            ))),
        }
    }

    /// A function's asynchronous invocation settings for a qualifier.
    pub fn event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<EventInvokeConfig, ApiError> {
        self.get(function, None)?;
        self.store
            .event_invoke_config(function, qualifier)?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "The function {} doesn't have an EventInvokeConfig",
                    self.arn(function, Some(qualifier))
                ))
            })
    }

    pub fn event_invoke_configs(&self, function: &str) -> Result<Vec<EventInvokeConfig>, ApiError> {
        self.get(function, None)?;
        Ok(self.store.event_invoke_configs(Some(function))?)
    }

    pub fn delete_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.event_invoke_config(function, qualifier)?;
        self.store.delete_event_invoke_config(function, qualifier)?;
        Ok(())
    }

    /// Configures provisioned concurrency on a version or alias.
    pub fn put_provisioned(
        &self,
        name: &str,
        qualifier: &str,
        requested: u32,
    ) -> Result<ProvisionedRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.get(name, None)?;
        if requested == 0 {
            return Err(ApiError::InvalidParameter(
                "ProvisionedConcurrentExecutions must be at least 1; delete the configuration to remove it"
                    .into(),
            ));
        }
        let version = self.provisioned_version(name, qualifier)?;
        let others: Vec<ProvisionedRecord> = self
            .store
            .list_provisioned(Some(name))?
            .into_iter()
            .filter(|c| c.qualifier != qualifier)
            .collect();
        for other in &others {
            if self.provisioned_version(name, &other.qualifier).ok() == Some(version) {
                return Err(ApiError::Conflict(format!(
                    "version {version} already has provisioned concurrency through {:?}; \
                     change or delete that configuration instead",
                    other.qualifier
                )));
            }
        }
        let total = requested + others.iter().map(|c| c.requested).sum::<u32>();
        let limit = match self.dispatcher.reserved(name) {
            Some(reserved) if total > reserved => {
                Some(format!("the function's reserved concurrency of {reserved}"))
            }
            Some(_) => None,
            None => {
                let unreserved = self.dispatcher.unreserved_limit();
                (total > unreserved)
                    .then(|| format!("the account's {unreserved} unreserved concurrent executions"))
            }
        };
        if let Some(limit) = limit {
            return Err(ApiError::InvalidParameter(format!(
                "Requested Provisioned Concurrency ({total} over all of the function's \
                 configurations) should not be greater than {limit}"
            )));
        }
        let record = ProvisionedRecord {
            function: name.to_owned(),
            qualifier: qualifier.to_owned(),
            requested,
            last_modified: ember_core::time::lambda_timestamp(SystemTime::now()),
        };
        self.store.put_provisioned(&record)?;
        self.apply_provisioned(name)?;
        Ok(record)
    }

    /// One provisioned concurrency configuration and its state now.
    pub fn get_provisioned(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Result<(ProvisionedRecord, ProvisionedState), ApiError> {
        self.get(name, None)?;
        Qualifier::parse(qualifier)?;
        let record = self
            .store
            .list_provisioned(Some(name))?
            .into_iter()
            .find(|c| c.qualifier == qualifier)
            .ok_or_else(|| ApiError::ProvisionedConfigNotFound(self.arn(name, Some(qualifier))))?;
        let state = self.provisioned_state(&record);
        Ok((record, state))
    }

    /// Every provisioned concurrency configuration of a function (every function's for
    /// `None`), with its state now.
    pub fn list_provisioned(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<(ProvisionedRecord, ProvisionedState)>, ApiError> {
        if let Some(name) = name {
            self.get(name, None)?;
        }
        Ok(self
            .store
            .list_provisioned(name)?
            .into_iter()
            .map(|record| {
                let state = self.provisioned_state(&record);
                (record, state)
            })
            .collect())
    }

    fn provisioned_state(&self, record: &ProvisionedRecord) -> ProvisionedState {
        self.provisioned_version(&record.function, &record.qualifier)
            .ok()
            .and_then(|v| self.dispatcher.provisioned(&record.function, v))
            .unwrap_or(ProvisionedState {
                requested: record.requested,
                allocated: 0,
                status: ember_dispatch::ProvisionedStatus::Failed,
                reason: Some("the configuration's version no longer exists".into()),
            })
    }

    pub fn delete_provisioned(&self, name: &str, qualifier: &str) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.get(name, None)?;
        if !self.store.delete_provisioned(name, qualifier)? {
            return Err(ApiError::ProvisionedConfigNotFound(
                self.arn(name, Some(qualifier)),
            ));
        }
        self.apply_provisioned(name)
    }

    /// Tells the dispatcher how many provisioned environments each of the function's
    /// versions should have, from the stored configurations and where aliases point now.
    fn apply_provisioned(&self, name: &str) -> Result<(), ApiError> {
        let mut targets: BTreeMap<u32, u32> = self
            .store
            .list_versions(name)?
            .iter()
            .filter_map(|v| v.version)
            .map(|v| (v, 0))
            .collect();
        for config in self.store.list_provisioned(Some(name))? {
            match self.provisioned_version(name, &config.qualifier) {
                Ok(v) => *targets.entry(v).or_default() += config.requested,
                Err(e) => {
                    tracing::warn!(function = name, qualifier = %config.qualifier, error = %e, "a provisioned concurrency configuration applies to no version");
                }
            }
        }
        for (version, n) in targets {
            // A version that is not deployed has no pool; nothing to provision.
            let _ = self.dispatcher.provision(name, version, n);
        }
        Ok(())
    }

    pub fn delete(&self, name: &str, qualifier: Option<&Qualifier>) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        match qualifier {
            None => {
                let old = self.get(name, None)?;
                let versions = self.store.list_versions(name)?;
                self.store.delete(name)?;
                self.urls
                    .write()
                    .expect("urls lock")
                    .retain(|_, u| u.config.function != name);
                self.routes
                    .write()
                    .expect("routes lock")
                    .retain(|(_, r)| r.function != name);
                self.dispatcher.remove(name);
                self.dispatcher.logs().remove(name);
                self.collect_garbage(&old.code_sha256);
                for version in versions {
                    self.collect_garbage(&version.code_sha256);
                }
                Ok(())
            }
            Some(Qualifier::Version(v)) => {
                let version = self.get(name, qualifier)?;
                let users: Vec<String> = self
                    .store
                    .list_aliases(name)?
                    .into_iter()
                    .filter(|a| a.version == v.to_string() || a.routing.as_ref().is_some_and(|(r, _)| *r == v.to_string()))
                    .map(|a| a.name)
                    .collect();
                if !users.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "version {v} is used by the alias(es) {}; point them elsewhere first",
                        users.join(", ")
                    )));
                }
                self.store.delete_provisioned(name, &v.to_string())?;
                self.store.delete_version(name, *v)?;
                self.dispatcher.remove_version(name, *v);
                self.collect_garbage(&version.code_sha256);
                Ok(())
            }
            Some(Qualifier::Latest | Qualifier::Alias(_)) => Err(ApiError::InvalidParameter(
                "a qualified delete takes a version number; delete the function itself without a qualifier, \
                 or an alias with DeleteAlias"
                    .into(),
            )),
        }
    }

    /// Checks that `version` (`$LATEST` or a number) exists for `name`.
    fn check_version(&self, name: &str, version: &str) -> Result<(), ApiError> {
        let qualifier = match Qualifier::parse(version) {
            Ok(q @ (Qualifier::Latest | Qualifier::Version(_))) => q,
            _ => {
                return Err(ApiError::InvalidParameter(format!(
                    "FunctionVersion must be $LATEST or a version number (got {version:?})"
                )));
            }
        };
        self.get(name, Some(&qualifier)).map(|_| ())
    }

    fn validate_alias(&self, alias: &AliasRecord) -> Result<(), ApiError> {
        validate_alias_name(&alias.name).map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
        self.check_version(&alias.function, &alias.version)?;
        if let Some((extra, weight)) = &alias.routing {
            if !(0.0..=1.0).contains(weight) {
                return Err(ApiError::InvalidParameter(format!(
                    "AdditionalVersionWeights values must be between 0.0 and 1.0 (got {weight})"
                )));
            }
            if alias.version == "$LATEST" || extra == "$LATEST" {
                return Err(ApiError::InvalidParameter(
                    "weighted routing works between published versions, not $LATEST".into(),
                ));
            }
            if *extra == alias.version {
                return Err(ApiError::InvalidParameter(
                    "the additional version must differ from the alias's FunctionVersion".into(),
                ));
            }
            self.check_version(&alias.function, extra)?;
        }
        Ok(())
    }

    pub fn create_alias(
        &self,
        function: &str,
        name: &str,
        change: AliasChange,
    ) -> Result<AliasRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.get(function, None)?;
        let alias = AliasRecord {
            function: function.to_owned(),
            name: name.to_owned(),
            version: change
                .version
                .ok_or_else(|| ApiError::InvalidParameter("FunctionVersion is required".into()))?,
            description: change.description.unwrap_or_default(),
            routing: change.routing.flatten(),
            revision_id: uuid::Uuid::new_v4().to_string(),
        };
        self.validate_alias(&alias)?;
        self.store.create_alias(&alias).map_err(|e| match e {
            StoreError::AliasExists(_) => ApiError::Conflict(format!(
                "Alias already exists: {}",
                self.arn(function, Some(name))
            )),
            other => other.into(),
        })?;
        self.route(&alias);
        Ok(alias)
    }

    pub fn get_alias(&self, function: &str, name: &str) -> Result<AliasRecord, ApiError> {
        self.get(function, None)?;
        self.store.get_alias(function, name).map_err(|e| match e {
            StoreError::AliasNotFound(_) => ApiError::NotFound(format!(
                "Alias not found: {}",
                self.arn(function, Some(name))
            )),
            other => other.into(),
        })
    }

    pub fn list_aliases(&self, function: &str) -> Result<Vec<AliasRecord>, ApiError> {
        self.get(function, None)?;
        Ok(self.store.list_aliases(function)?)
    }

    pub fn update_alias(
        &self,
        function: &str,
        name: &str,
        change: AliasChange,
        revision: Option<&str>,
    ) -> Result<AliasRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let old = self.get_alias(function, name)?;
        check_revision(&old.revision_id, revision)?;
        let alias = AliasRecord {
            version: change.version.unwrap_or(old.version),
            description: change.description.unwrap_or(old.description),
            routing: change.routing.unwrap_or(old.routing),
            revision_id: uuid::Uuid::new_v4().to_string(),
            ..old
        };
        self.validate_alias(&alias)?;
        if alias.routing.is_some()
            && self
                .store
                .list_provisioned(Some(function))?
                .iter()
                .any(|c| c.qualifier == name)
        {
            return Err(ApiError::InvalidParameter(format!(
                "the alias {name} has provisioned concurrency, which applies to one version; \
                 delete that configuration before adding weighted routing"
            )));
        }
        self.store.update_alias(&alias)?;
        self.route(&alias);
        self.apply_provisioned(function)?;
        Ok(alias)
    }

    pub fn delete_alias(&self, function: &str, name: &str) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        self.get_alias(function, name)?;
        self.store.delete_provisioned(function, name)?;
        self.store.delete_url(function, name)?;
        self.urls
            .write()
            .expect("urls lock")
            .remove(&crate::urls::url_id(function, name));
        self.store.delete_alias(function, name)?;
        self.dispatcher.remove_alias(function, name);
        self.apply_provisioned(function)
    }

    pub fn tags(&self, function: &str) -> Result<BTreeMap<String, String>, ApiError> {
        self.get(function, None)?;
        Ok(self.store.get_tags(function)?)
    }

    /// Adds or replaces tags (`add`) and removes tags (`remove`).
    pub fn change_tags(
        &self,
        function: &str,
        add: BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let mut tags = self.tags(function)?;
        for (key, value) in &add {
            if key.is_empty() || key.len() > 128 || value.len() > 256 || key.starts_with("aws:") {
                return Err(ApiError::InvalidParameter(format!(
                    "tag {key:?} is not valid: keys are 1-128 characters not starting with aws:, values at most 256"
                )));
            }
        }
        tags.extend(add);
        for key in remove {
            tags.remove(key);
        }
        if tags.len() > 50 {
            return Err(ApiError::InvalidParameter(format!(
                "a function may have at most 50 tags (got {})",
                tags.len()
            )));
        }
        self.store.set_tags(function, &tags)?;
        Ok(())
    }

    /// (functions, total code bytes of every stored package).
    pub fn usage(&self) -> Result<(usize, u64), ApiError> {
        let functions = self.store.list()?;
        let mut total: u64 = functions.iter().map(|f| f.code_size).sum();
        for f in &functions {
            total += self
                .store
                .list_versions(&f.spec.name)?
                .iter()
                .map(|v| v.code_size)
                .sum::<u64>();
        }
        Ok((functions.len(), total))
    }
}

fn check_revision(current: &str, revision: Option<&str>) -> Result<(), ApiError> {
    match revision {
        Some(r) if r != current => Err(ApiError::PreconditionFailed(format!(
            "The Revision Id provided does not match the latest Revision Id {current}. Call the Get operation to get the latest Revision Id"
        ))),
        _ => Ok(()),
    }
}
