//! The control plane's function registry: validates, stores, and tells the dispatcher.
//!
//! Every change goes store first, then dispatcher: a function the dispatcher runs is always
//! one the store holds, so a restart finds what was running. Changes to functions are
//! serialized by one lock (they are rare and fast next to invocations, which never take it).
//! Methods are blocking (SQLite, unpacking a package): the API calls them off the async
//! workers.

use std::sync::Mutex;
use std::time::SystemTime;

use ember_core::function::validate_name;
use ember_core::{FunctionSpec, FunctionUpdate, RuntimeFamily};
use ember_dispatch::{Deployment, Dispatcher};
use ember_store::archive::has_executable_bootstrap;
use ember_store::{Artifacts, FunctionRecord, Store};

use crate::error::ApiError;

pub struct Registry {
    store: Store,
    artifacts: Artifacts,
    dispatcher: Dispatcher,
    changes: Mutex<()>,
}

impl Registry {
    /// Opens the registry and deploys every stored function into the dispatcher.
    pub fn load(
        store: Store,
        artifacts: Artifacts,
        dispatcher: Dispatcher,
    ) -> Result<Registry, ApiError> {
        let registry = Registry {
            store,
            artifacts,
            dispatcher,
            changes: Mutex::new(()),
        };
        for record in registry.store.list()? {
            registry.deploy(&record);
        }
        Ok(registry)
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    fn deploy(&self, record: &FunctionRecord) {
        self.dispatcher.deploy(Deployment {
            spec: record.spec.clone(),
            code_dir: self.artifacts.code_dir(&record.code_sha256),
        });
    }

    pub fn arn(&self, name: &str) -> String {
        let config = self.dispatcher.config();
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            config.region, config.account
        )
    }

    fn validate(&self, spec: &FunctionSpec) -> Result<(), ApiError> {
        spec.validate(&self.dispatcher.config().available_runtimes())?;
        Ok(())
    }

    /// Checks a package against the function that will run it.
    fn check_package(&self, spec: &FunctionSpec, sha256: &str) -> Result<(), ApiError> {
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

    /// Removes a package's files if no function uses it any more.
    fn collect_garbage(&self, sha256: &str) {
        if !self.store.code_in_use(sha256).unwrap_or(true) {
            self.artifacts.remove(sha256);
        }
    }

    fn record(spec: FunctionSpec, code_sha256: String, code_size: u64) -> FunctionRecord {
        FunctionRecord {
            spec,
            code_sha256,
            code_size,
            revision_id: uuid::Uuid::new_v4().to_string(),
            last_modified: ember_core::time::lambda_timestamp(SystemTime::now()),
        }
    }

    pub fn create(&self, spec: FunctionSpec, zip: &[u8]) -> Result<FunctionRecord, ApiError> {
        self.validate(&spec)?;
        let _guard = self.changes.lock().expect("registry lock");
        if self.store.get(&spec.name).is_ok() {
            return Err(ApiError::FunctionExists(spec.name));
        }
        let artifact = self.artifacts.put(zip)?;
        let stored = self.check_package(&spec, &artifact.sha256).and_then(|()| {
            let record = Self::record(spec, artifact.sha256.clone(), artifact.size);
            self.store.create(&record)?;
            Ok(record)
        });
        match stored {
            Ok(record) => {
                self.deploy(&record);
                Ok(record)
            }
            Err(e) => {
                self.collect_garbage(&artifact.sha256);
                Err(e)
            }
        }
    }

    pub fn get(&self, name: &str) -> Result<FunctionRecord, ApiError> {
        validate_name(name).map_err(|_| ApiError::FunctionNotFound(self.arn(name)))?;
        self.store.get(name).map_err(|e| not_found_as_arn(e, self))
    }

    pub fn list(&self) -> Result<Vec<FunctionRecord>, ApiError> {
        Ok(self.store.list()?)
    }

    pub fn update_code(
        &self,
        name: &str,
        zip: &[u8],
        revision: Option<&str>,
    ) -> Result<FunctionRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let old = self.get(name)?;
        check_revision(&old, revision)?;
        let artifact = self.artifacts.put(zip)?;
        let result = self
            .check_package(&old.spec, &artifact.sha256)
            .and_then(|()| {
                let record = Self::record(old.spec.clone(), artifact.sha256.clone(), artifact.size);
                self.store.update(&record)?;
                Ok(record)
            });
        match result {
            Ok(record) => {
                self.deploy(&record);
                if record.code_sha256 != old.code_sha256 {
                    self.collect_garbage(&old.code_sha256);
                }
                Ok(record)
            }
            Err(e) => {
                if artifact.sha256 != old.code_sha256 {
                    self.collect_garbage(&artifact.sha256);
                }
                Err(e)
            }
        }
    }

    pub fn update_config(
        &self,
        name: &str,
        update: FunctionUpdate,
        revision: Option<&str>,
    ) -> Result<FunctionRecord, ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let old = self.get(name)?;
        check_revision(&old, revision)?;
        let spec = old.spec.updated(update);
        self.validate(&spec)?;
        self.check_package(&spec, &old.code_sha256)?;
        let record = Self::record(spec, old.code_sha256.clone(), old.code_size);
        self.store.update(&record)?;
        self.deploy(&record);
        Ok(record)
    }

    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _guard = self.changes.lock().expect("registry lock");
        let old = self.get(name)?;
        self.store.delete(name)?;
        self.dispatcher.remove(name);
        self.dispatcher.logs().remove(name);
        self.collect_garbage(&old.code_sha256);
        Ok(())
    }
}

fn not_found_as_arn(e: ember_store::StoreError, registry: &Registry) -> ApiError {
    match e {
        ember_store::StoreError::NotFound(name) => ApiError::FunctionNotFound(registry.arn(&name)),
        other => other.into(),
    }
}

fn check_revision(record: &FunctionRecord, revision: Option<&str>) -> Result<(), ApiError> {
    match revision {
        Some(r) if r != record.revision_id => Err(ApiError::PreconditionFailed(format!(
            "The Revision Id provided does not match the latest Revision Id {}. Call GetFunction to get the latest Revision Id",
            record.revision_id
        ))),
        _ => Ok(()),
    }
}
