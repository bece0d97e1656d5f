//! The Lambda API's JSON shapes: requests as sent by the AWS CLI and SDKs, responses as they
//! expect them. Requests refuse fields Lambda does not define; fields Lambda defines but
//! Ember does not act on yet are accepted and ignored unless they ask for something Ember
//! cannot do, which is refused with a clear error.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ember_core::limits;
use ember_core::{FunctionSpec, FunctionUpdate};
use ember_store::FunctionRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EnvironmentIn {
    #[serde(default)]
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct EphemeralStorageIn {
    pub size: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    #[serde(rename = "S3ObjectVersion")]
    pub s3_object_version: Option<String>,
    pub image_uri: Option<String>,
    pub source_kms_key_arn: Option<String>,
}

/// CreateFunction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateFunctionIn {
    pub function_name: String,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: CodeIn,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub publish: Option<bool>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<EphemeralStorageIn>,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub layers: Option<Vec<String>>,
    // Accepted for compatibility; no effect in Ember.
    pub vpc_config: Option<Value>,
    /// `{"TargetArn": QUEUE_ARN}`: the dead-letter queue of asynchronous events.
    pub dead_letter_config: Option<Value>,
    pub tracing_config: Option<Value>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<Value>,
    pub tags: Option<Value>,
    pub file_system_configs: Option<Value>,
    pub image_config: Option<Value>,
    pub code_signing_config_arn: Option<Value>,
    pub snap_start: Option<Value>,
    pub logging_config: Option<Value>,
}

/// UpdateFunctionCode.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpdateCodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    #[serde(rename = "S3ObjectVersion")]
    pub s3_object_version: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub source_kms_key_arn: Option<String>,
}

/// UpdateFunctionConfiguration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpdateConfigIn {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub environment: Option<EnvironmentIn>,
    pub runtime: Option<String>,
    pub ephemeral_storage: Option<EphemeralStorageIn>,
    pub revision_id: Option<String>,
    pub layers: Option<Vec<String>>,
    pub vpc_config: Option<Value>,
    pub dead_letter_config: Option<Value>,
    pub tracing_config: Option<Value>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<Value>,
    pub file_system_configs: Option<Value>,
    pub image_config: Option<Value>,
    pub snap_start: Option<Value>,
    pub logging_config: Option<Value>,
}

/// Parses a JSON request body into `T`, with a Lambda-style error on failure.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidParameter(format!("the request body is not valid: {e}")))
}

/// Decodes `Code.ZipFile`.
pub fn decode_zip(zip: Option<&str>, s3: bool) -> Result<Vec<u8>, ApiError> {
    if s3 {
        return Err(ApiError::InvalidParameter(
            "Ember has no S3: send the package inline as Code.ZipFile (base64 of the zip)".into(),
        ));
    }
    let zip = zip.ok_or_else(|| {
        ApiError::InvalidParameter("Code.ZipFile is required: the base64 of the zip".into())
    })?;
    let bytes = BASE64.decode(zip.trim()).map_err(|e| {
        ApiError::InvalidParameter(format!("Code.ZipFile is not valid base64: {e}"))
    })?;
    if bytes.len() as u64 > limits::ZIP_BYTES {
        return Err(ApiError::EntityTooLarge(format!(
            "Zipped size must be at most {} bytes (got {}); upload a smaller package",
            limits::ZIP_BYTES,
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Refuses what Ember cannot do yet, naming it.
pub fn refuse_unsupported(
    package_type: Option<&str>,
    architectures: Option<&[String]>,
) -> Result<(), ApiError> {
    if let Some(pt) = package_type
        && pt != "Zip"
    {
        return Err(ApiError::InvalidParameter(format!(
            "PackageType {pt:?} is not supported; use \"Zip\""
        )));
    }
    if let Some(archs) = architectures
        && archs.iter().any(|a| a != "x86_64")
    {
        return Err(ApiError::InvalidParameter(format!(
            "Architectures {archs:?} is not supported on this host; use [\"x86_64\"]"
        )));
    }
    Ok(())
}

impl CreateFunctionIn {
    /// The function's spec, before validation.
    pub fn spec(&self) -> FunctionSpec {
        FunctionSpec {
            name: self.function_name.clone(),
            runtime: self.runtime.clone().unwrap_or_default(),
            handler: self.handler.clone().unwrap_or_default(),
            memory_mb: self.memory_size.unwrap_or(limits::DEFAULT_MEMORY_MB),
            timeout_s: self.timeout.unwrap_or(limits::DEFAULT_TIMEOUT_S),
            ephemeral_mb: self
                .ephemeral_storage
                .as_ref()
                .map_or(limits::DEFAULT_EPHEMERAL_MB, |e| e.size),
            environment: self
                .environment
                .as_ref()
                .and_then(|e| e.variables.clone())
                .unwrap_or_default(),
            description: self.description.clone().unwrap_or_default(),
            role: self.role.clone().unwrap_or_default(),
            layers: self.layers.clone().unwrap_or_default(),
            freeze_idle: false,
            isolation: Default::default(),
            network: Default::default(),
            keep_alive: None,
            max_concurrency: 1,
            reuse_instance: false,
            dead_letter_target: dead_letter(self.dead_letter_config.as_ref()).flatten(),
        }
    }
}

impl UpdateConfigIn {
    pub fn update(&self) -> FunctionUpdate {
        FunctionUpdate {
            runtime: self.runtime.clone(),
            handler: self.handler.clone(),
            memory_mb: self.memory_size,
            timeout_s: self.timeout,
            ephemeral_mb: self.ephemeral_storage.as_ref().map(|e| e.size),
            environment: self
                .environment
                .as_ref()
                .map(|e| e.variables.clone().unwrap_or_default()),
            description: self.description.clone(),
            role: self.role.clone(),
            layers: self.layers.clone(),
            freeze_idle: None,
            isolation: None,
            network: None,
            keep_alive: None,
            max_concurrency: None,
            reuse_instance: None,
            dead_letter_target: dead_letter(self.dead_letter_config.as_ref()),
        }
    }
}

/// `DeadLetterConfig`: `None` when absent, `Some(None)` to remove (an empty `TargetArn`).
fn dead_letter(config: Option<&Value>) -> Option<Option<String>> {
    let config = config?;
    let target = config
        .get("TargetArn")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Some((!target.is_empty()).then_some(target))
}

/// FunctionConfiguration, as every control-plane call returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub code_size: u64,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    pub environment: Value,
    pub tracing_config: Value,
    pub revision_id: String,
    pub state: &'static str,
    pub last_update_status: &'static str,
    pub package_type: &'static str,
    pub architectures: [&'static str; 1],
    pub ephemeral_storage: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_config: Option<Value>,
}

impl FunctionConfiguration {
    pub fn new(record: &FunctionRecord, arn: String) -> FunctionConfiguration {
        let spec = &record.spec;
        // Lambda reports CodeSha256 as base64, not hex.
        let sha = hex::decode(&record.code_sha256)
            .map(|raw| BASE64.encode(raw))
            .unwrap_or_default();
        FunctionConfiguration {
            function_name: spec.name.clone(),
            function_arn: arn,
            runtime: spec.runtime.clone(),
            role: spec.role.clone(),
            handler: spec.handler.clone(),
            code_size: record.code_size,
            description: spec.description.clone(),
            timeout: spec.timeout_s,
            memory_size: spec.memory_mb,
            last_modified: record.last_modified.clone(),
            code_sha256: sha,
            version: record
                .version
                .map_or_else(|| "$LATEST".to_owned(), |v| v.to_string()),
            environment: serde_json::json!({ "Variables": spec.environment }),
            tracing_config: serde_json::json!({ "Mode": "PassThrough" }),
            revision_id: record.revision_id.clone(),
            state: "Active",
            last_update_status: "Successful",
            package_type: "Zip",
            architectures: ["x86_64"],
            ephemeral_storage: serde_json::json!({ "Size": spec.ephemeral_mb }),
            layers: Vec::new(),
            dead_letter_config: spec
                .dead_letter_target
                .as_ref()
                .map(|t| serde_json::json!({ "TargetArn": t })),
        }
    }
}

/// Tags as a JSON object of strings.
pub fn parse_tags(tags: Value) -> Result<BTreeMap<String, String>, ApiError> {
    serde_json::from_value(tags).map_err(|_| {
        ApiError::InvalidParameter("Tags must be an object of string keys and string values".into())
    })
}

/// PublishVersion.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PublishVersionIn {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RoutingConfigIn {
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
}

/// CreateAlias and UpdateAlias.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AliasIn {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfigIn>,
    pub revision_id: Option<String>,
}

impl AliasIn {
    pub fn change(&self) -> Result<crate::registry::AliasChange, ApiError> {
        let routing = match &self.routing_config {
            None => None,
            Some(RoutingConfigIn {
                additional_version_weights: None,
            }) => Some(None),
            Some(RoutingConfigIn {
                additional_version_weights: Some(weights),
            }) => match weights.len() {
                0 => Some(None),
                1 => weights.iter().next().map(|(v, w)| Some((v.clone(), *w))),
                n => {
                    return Err(ApiError::InvalidParameter(format!(
                        "AdditionalVersionWeights takes one version (got {n})"
                    )));
                }
            },
        };
        Ok(crate::registry::AliasChange {
            version: self.function_version.clone(),
            description: self.description.clone(),
            routing,
        })
    }
}

/// AliasConfiguration, as every alias call returns it.
pub fn alias_configuration(alias: &ember_store::AliasRecord, arn: String) -> Value {
    let mut body = serde_json::json!({
        "AliasArn": arn,
        "Name": alias.name,
        "FunctionVersion": alias.version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if let Some((version, weight)) = &alias.routing {
        body["RoutingConfig"] =
            serde_json::json!({ "AdditionalVersionWeights": { version.clone(): weight } });
    }
    body
}

/// PublishLayerVersion.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PublishLayerIn {
    pub content: CodeIn,
    pub description: Option<String>,
    pub compatible_runtimes: Option<Vec<String>>,
    pub license_info: Option<String>,
    pub compatible_architectures: Option<Vec<String>>,
}

/// A LayerVersion document.
pub fn layer_version(
    layer: &ember_store::LayerRecord,
    layer_arn: String,
    version_arn: String,
    location: String,
) -> Value {
    let sha = hex::decode(&layer.code_sha256)
        .map(|raw| BASE64.encode(raw))
        .unwrap_or_default();
    serde_json::json!({
        "Content": { "Location": location, "CodeSha256": sha, "CodeSize": layer.code_size },
        "LayerArn": layer_arn,
        "LayerVersionArn": version_arn,
        "Description": layer.description,
        "CreatedDate": layer.created,
        "Version": layer.version,
        "CompatibleRuntimes": layer.compatible_runtimes,
        "LicenseInfo": layer.license,
        "CompatibleArchitectures": ["x86_64"],
    })
}
