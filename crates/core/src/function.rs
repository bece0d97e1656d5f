//! A function's configuration and the rules it must satisfy.
//!
//! [`FunctionSpec`] is the validated form; the API parses requests into it and the store
//! keeps it as JSON. [`FunctionUpdate`] is a partial change (UpdateFunctionConfiguration),
//! applied to a spec and validated again as a whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::isolation::{Isolation, Network};
use crate::limits;
use crate::runtime::{KNOWN, Runtime, RuntimeFamily};
use crate::scaling::KeepAliveSetting;

/// A function's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    /// The runtime identifier exactly as the user gave it.
    pub runtime: String,
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub ephemeral_mb: u32,
    pub environment: BTreeMap<String, String>,
    pub description: String,
    pub role: String,
    /// Layer version ARNs, in the order they are laid over `/opt`.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Freeze idle environments, so nothing of the function runs between invocations.
    /// An Ember setting (`/ember/v1/functions/{name}/settings`); off by default because
    /// each warm invocation then pays a thaw.
    #[serde(default)]
    pub freeze_idle: bool,
    /// The sandbox backend its environments run on. An Ember setting, like `freeze_idle`.
    #[serde(default)]
    pub isolation: Isolation,
    /// What its environments may reach over the network. An Ember setting.
    #[serde(default)]
    pub network: Network,
    /// Its own keep-alive policy; `None` follows the server's. An Ember setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAliveSetting>,
    /// Invocations one environment serves at once (`AWS_LAMBDA_MAX_CONCURRENCY`), for
    /// runtimes that can. An Ember setting; 1 by default.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub max_concurrency: u32,
    /// For a wasm `wasi:http` handler: serve an environment's invocations with one instance
    /// kept between them, instead of a fresh instance each. An Ember setting; off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_instance: bool,
    /// `DeadLetterConfig.TargetArn`: where an asynchronous event that failed for good is
    /// sent (a queue's ARN), as Lambda's dead-letter queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<String>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// A partial change to a [`FunctionSpec`]; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct FunctionUpdate {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub memory_mb: Option<u32>,
    pub timeout_s: Option<u32>,
    pub ephemeral_mb: Option<u32>,
    pub environment: Option<BTreeMap<String, String>>,
    pub description: Option<String>,
    pub role: Option<String>,
    pub layers: Option<Vec<String>>,
    pub freeze_idle: Option<bool>,
    pub isolation: Option<Isolation>,
    pub network: Option<Network>,
    /// `Some(None)` returns to the server's keep-alive.
    pub keep_alive: Option<Option<KeepAliveSetting>>,
    pub max_concurrency: Option<u32>,
    pub reuse_instance: Option<bool>,
    /// `Some(None)` removes the dead-letter queue.
    pub dead_letter_target: Option<Option<String>>,
}

/// Why a function configuration was refused. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("function name must be 1 to 64 characters of letters, digits, '-' and '_' (got {0:?})")]
    Name(String),
    #[error("memory must be between 128 and 10240 MB (got {0})")]
    Memory(u32),
    #[error("timeout must be between 1 and 900 seconds (got {0})")]
    Timeout(u32),
    #[error("ephemeral storage must be between 512 and 10240 MB (got {0})")]
    EphemeralStorage(u32),
    #[error("unknown runtime {given:?}; Ember knows {}", KNOWN.join(", "))]
    UnknownRuntime { given: String },
    #[error("runtime {given:?} is not available on this host; available: {available}")]
    UnavailableRuntime { given: String, available: String },
    #[error("handler {handler:?} is not valid for runtime {runtime}: {hint}")]
    Handler {
        handler: String,
        runtime: String,
        hint: &'static str,
    },
    #[error(
        "environment variable name {0:?} is not valid: use a letter followed by letters, digits or '_'"
    )]
    EnvironmentKey(String),
    #[error("environment variable {0:?} is reserved by the platform; choose another name")]
    ReservedEnvironmentKey(String),
    #[error(
        "environment variables take {0} bytes; the limit is 4096 bytes for all keys and values together"
    )]
    EnvironmentSize(usize),
    #[error("max concurrency per environment must be between 1 and 64 (got {0})")]
    MaxConcurrency(u32),
    #[error("description must be at most 256 characters (got {0})")]
    Description(usize),
    #[error("a function may use at most 5 layers (got {0})")]
    TooManyLayers(usize),
    #[error(
        "{0:?} is not a layer version ARN; use arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION"
    )]
    LayerArn(String),
    #[error("isolation {given} is not available on this server ({reason}); available: {available}")]
    UnavailableIsolation {
        given: Isolation,
        reason: String,
        available: String,
    },
    #[error("{0}")]
    Isolation(&'static str),
    #[error("network egress is not available on this server ({0})")]
    UnavailableEgress(String),
}

/// Variables the platform sets in every environment; a function may not override them.
pub const RESERVED_ENVIRONMENT: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_MAX_CONCURRENCY",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Checks a function name: 1–64 of `[A-Za-z0-9_-]`.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= limits::NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::Name(name.to_owned()))
    }
}

impl FunctionSpec {
    /// Checks every field. `available` lists the runtime families this host can run.
    pub fn validate(&self, available: &[RuntimeFamily]) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        let runtime =
            Runtime::parse(&self.runtime).ok_or_else(|| ValidationError::UnknownRuntime {
                given: self.runtime.clone(),
            })?;
        if !available.contains(&runtime.family()) {
            let names: Vec<&str> = KNOWN
                .iter()
                .copied()
                .filter(|id| Runtime::parse(id).is_some_and(|r| available.contains(&r.family())))
                .collect();
            return Err(ValidationError::UnavailableRuntime {
                given: self.runtime.clone(),
                available: names.join(", "),
            });
        }
        validate_handler(&self.handler, &runtime)?;
        match (runtime.family(), self.isolation) {
            (RuntimeFamily::Wasm, Isolation::Process | Isolation::Wasm) => {}
            (RuntimeFamily::Wasm, _) => {
                return Err(ValidationError::Isolation(
                    "runtime wasm runs in the wasm engine: leave Isolation unset or set it to wasm",
                ));
            }
            (_, Isolation::Wasm) => {
                return Err(ValidationError::Isolation(
                    "isolation wasm runs only functions of runtime wasm",
                ));
            }
            _ => {}
        }
        if runtime.family() != RuntimeFamily::Wasm && self.reuse_instance {
            return Err(ValidationError::Isolation(
                "ReuseInstance applies to wasm functions only: leave it off",
            ));
        }
        if !(limits::MEMORY_MB.0..=limits::MEMORY_MB.1).contains(&self.memory_mb) {
            return Err(ValidationError::Memory(self.memory_mb));
        }
        if !(limits::TIMEOUT_S.0..=limits::TIMEOUT_S.1).contains(&self.timeout_s) {
            return Err(ValidationError::Timeout(self.timeout_s));
        }
        if !(limits::EPHEMERAL_MB.0..=limits::EPHEMERAL_MB.1).contains(&self.ephemeral_mb) {
            return Err(ValidationError::EphemeralStorage(self.ephemeral_mb));
        }
        if !(limits::MAX_CONCURRENCY.0..=limits::MAX_CONCURRENCY.1).contains(&self.max_concurrency)
        {
            return Err(ValidationError::MaxConcurrency(self.max_concurrency));
        }
        validate_environment(&self.environment)?;
        let chars = self.description.chars().count();
        if chars > limits::DESCRIPTION_CHARS {
            return Err(ValidationError::Description(chars));
        }
        if self.layers.len() > limits::LAYERS {
            return Err(ValidationError::TooManyLayers(self.layers.len()));
        }
        for layer in &self.layers {
            crate::arn::parse_layer_version_arn(layer)
                .ok_or_else(|| ValidationError::LayerArn(layer.clone()))?;
        }
        Ok(())
    }

    /// The backend that runs the function: the wasm engine for runtime `wasm`, else the
    /// chosen isolation.
    pub fn backend(&self) -> Isolation {
        if self.family() == RuntimeFamily::Wasm {
            Isolation::Wasm
        } else {
            self.isolation
        }
    }

    /// The runtime family; only meaningful on a validated spec.
    pub fn family(&self) -> RuntimeFamily {
        Runtime::parse(&self.runtime).map_or(RuntimeFamily::Provided, |r| r.family())
    }

    /// Applies a partial update; the caller validates the result.
    pub fn updated(&self, update: FunctionUpdate) -> FunctionSpec {
        FunctionSpec {
            name: self.name.clone(),
            runtime: update.runtime.unwrap_or_else(|| self.runtime.clone()),
            handler: update.handler.unwrap_or_else(|| self.handler.clone()),
            memory_mb: update.memory_mb.unwrap_or(self.memory_mb),
            timeout_s: update.timeout_s.unwrap_or(self.timeout_s),
            ephemeral_mb: update.ephemeral_mb.unwrap_or(self.ephemeral_mb),
            environment: update
                .environment
                .unwrap_or_else(|| self.environment.clone()),
            description: update
                .description
                .unwrap_or_else(|| self.description.clone()),
            role: update.role.unwrap_or_else(|| self.role.clone()),
            layers: update.layers.unwrap_or_else(|| self.layers.clone()),
            freeze_idle: update.freeze_idle.unwrap_or(self.freeze_idle),
            isolation: update.isolation.unwrap_or(self.isolation),
            network: update.network.unwrap_or(self.network),
            keep_alive: update.keep_alive.unwrap_or(self.keep_alive),
            max_concurrency: update.max_concurrency.unwrap_or(self.max_concurrency),
            reuse_instance: update.reuse_instance.unwrap_or(self.reuse_instance),
            dead_letter_target: update
                .dead_letter_target
                .unwrap_or_else(|| self.dead_letter_target.clone()),
        }
    }
}

fn validate_handler(handler: &str, runtime: &Runtime) -> Result<(), ValidationError> {
    let err = |hint| ValidationError::Handler {
        handler: handler.to_owned(),
        runtime: runtime.to_string(),
        hint,
    };
    if handler.len() > limits::HANDLER_CHARS || handler.chars().any(char::is_whitespace) {
        return Err(err("use at most 128 characters and no spaces"));
    }
    match runtime.family() {
        RuntimeFamily::Python | RuntimeFamily::Node => {
            // `path/to/module.function`: a module path, a dot, an identifier.
            let Some((module, function)) = handler.rsplit_once('.') else {
                return Err(err("use module.function, e.g. app.handler"));
            };
            let ident = |s: &str| {
                s.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            };
            let module_ok = !module.is_empty()
                && !module.starts_with('/')
                && !module
                    .split('/')
                    .any(|part| part.is_empty() || part == "..")
                && module
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
            if module_ok && ident(function) {
                Ok(())
            } else {
                Err(err("use module.function, e.g. app.handler"))
            }
        }
        // The package's own bootstrap reads `_HANDLER` however it likes.
        RuntimeFamily::Provided => Ok(()),
        // The module's path inside the package, e.g. `app.wasm` or `bin/app.wasm`.
        RuntimeFamily::Wasm => {
            let path_ok = !handler.is_empty()
                && !handler.starts_with('/')
                && !handler
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..");
            if path_ok {
                Ok(())
            } else {
                Err(err(
                    "use the module's path inside the package, e.g. app.wasm",
                ))
            }
        }
    }
}

fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let mut size = 0;
    for (key, value) in vars {
        let mut chars = key.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ValidationError::EnvironmentKey(key.clone()));
        }
        if RESERVED_ENVIRONMENT.contains(&key.as_str()) {
            return Err(ValidationError::ReservedEnvironmentKey(key.clone()));
        }
        size += key.len() + value.len();
    }
    if size > limits::ENVIRONMENT_BYTES {
        return Err(ValidationError::EnvironmentSize(size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[RuntimeFamily] = &[RuntimeFamily::Python, RuntimeFamily::Provided];

    fn spec() -> FunctionSpec {
        FunctionSpec {
            name: "hello".into(),
            runtime: "python3.11".into(),
            handler: "app.handler".into(),
            memory_mb: 128,
            timeout_s: 3,
            ephemeral_mb: 512,
            environment: BTreeMap::new(),
            description: String::new(),
            role: String::new(),
            layers: Vec::new(),
            freeze_idle: false,
            isolation: Isolation::Process,
            network: Network::None,
            keep_alive: None,
            max_concurrency: 1,
            reuse_instance: false,
            dead_letter_target: None,
        }
    }

    #[test]
    fn a_typical_function_is_valid() {
        assert_eq!(spec().validate(ALL), Ok(()));
        let nested = FunctionSpec {
            handler: "src/pkg.mod.handler".into(),
            ..spec()
        };
        assert_eq!(nested.validate(ALL), Ok(()));
    }

    #[test]
    fn each_out_of_range_field_is_refused_with_its_own_error() {
        type Case = (FunctionSpec, fn(&ValidationError) -> bool);
        let cases: Vec<Case> = vec![
            (
                FunctionSpec {
                    name: "".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::Name(_)),
            ),
            (
                FunctionSpec {
                    name: "a".repeat(65),
                    ..spec()
                },
                |e| matches!(e, ValidationError::Name(_)),
            ),
            (
                FunctionSpec {
                    name: "bad name".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::Name(_)),
            ),
            (
                FunctionSpec {
                    memory_mb: 127,
                    ..spec()
                },
                |e| matches!(e, ValidationError::Memory(127)),
            ),
            (
                FunctionSpec {
                    memory_mb: 10241,
                    ..spec()
                },
                |e| matches!(e, ValidationError::Memory(_)),
            ),
            (
                FunctionSpec {
                    timeout_s: 0,
                    ..spec()
                },
                |e| matches!(e, ValidationError::Timeout(0)),
            ),
            (
                FunctionSpec {
                    timeout_s: 901,
                    ..spec()
                },
                |e| matches!(e, ValidationError::Timeout(_)),
            ),
            (
                FunctionSpec {
                    ephemeral_mb: 511,
                    ..spec()
                },
                |e| matches!(e, ValidationError::EphemeralStorage(_)),
            ),
            (
                FunctionSpec {
                    runtime: "cobol".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::UnknownRuntime { .. }),
            ),
            (
                FunctionSpec {
                    runtime: "nodejs20.x".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::UnavailableRuntime { .. }),
            ),
            (
                FunctionSpec {
                    handler: "app".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::Handler { .. }),
            ),
            (
                FunctionSpec {
                    handler: "../x.handler".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::Handler { .. }),
            ),
            (
                FunctionSpec {
                    handler: "app.1x".into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::Handler { .. }),
            ),
            (
                FunctionSpec {
                    environment: [("1X".into(), "v".into())].into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::EnvironmentKey(_)),
            ),
            (
                FunctionSpec {
                    environment: [("AWS_REGION".into(), "v".into())].into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::ReservedEnvironmentKey(_)),
            ),
            (
                FunctionSpec {
                    environment: [("BIG".into(), "v".repeat(4094))].into(),
                    ..spec()
                },
                |e| matches!(e, ValidationError::EnvironmentSize(4097)),
            ),
        ];
        for (spec, expected) in cases {
            let err = spec
                .validate(ALL)
                .expect_err(&format!("{spec:?} should be refused"));
            assert!(expected(&err), "{spec:?} gave {err:?}");
        }
    }

    #[test]
    fn messages_say_what_to_fix() {
        let err = FunctionSpec {
            memory_mb: 64,
            ..spec()
        }
        .validate(ALL)
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory must be between 128 and 10240 MB (got 64)"
        );
        let err = FunctionSpec {
            runtime: "nodejs20.x".into(),
            ..spec()
        }
        .validate(ALL)
        .unwrap_err();
        assert!(
            err.to_string().contains("available: python3, python3.9"),
            "{err}"
        );
    }

    #[test]
    fn provided_handlers_are_free_form() {
        let s = FunctionSpec {
            runtime: "provided.al2023".into(),
            handler: "anything".into(),
            ..spec()
        };
        assert_eq!(s.validate(ALL), Ok(()));
    }

    #[test]
    fn wasm_functions_name_their_module_and_run_only_in_the_wasm_engine() {
        let families = &[RuntimeFamily::Provided, RuntimeFamily::Wasm];
        let wasm = FunctionSpec {
            runtime: "wasm".into(),
            handler: "bin/app.wasm".into(),
            ..spec()
        };
        assert_eq!(wasm.validate(families), Ok(()));
        assert_eq!(wasm.backend(), Isolation::Wasm);
        for handler in ["../app.wasm", "/app.wasm", "a//b.wasm", ""] {
            let s = FunctionSpec {
                handler: handler.into(),
                ..wasm.clone()
            };
            assert!(
                matches!(s.validate(families), Err(ValidationError::Handler { .. })),
                "{handler:?}"
            );
        }
        let on_gvisor = FunctionSpec {
            isolation: Isolation::Gvisor,
            ..wasm.clone()
        };
        assert!(matches!(
            on_gvisor.validate(families),
            Err(ValidationError::Isolation(_))
        ));
        // Outgoing HTTP is the one network a wasm function has, with egress.
        let with_egress = FunctionSpec {
            network: Network::Egress,
            ..wasm.clone()
        };
        assert_eq!(with_egress.validate(families), Ok(()));
        let python_in_wasm = FunctionSpec {
            isolation: Isolation::Wasm,
            ..spec()
        };
        assert!(matches!(
            python_in_wasm.validate(ALL),
            Err(ValidationError::Isolation(_))
        ));
        assert!(matches!(
            wasm.validate(ALL),
            Err(ValidationError::UnavailableRuntime { .. })
        ));
    }
}
