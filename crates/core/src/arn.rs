//! Function names, ARNs and qualifiers, as every Lambda call accepts them.
//!
//! A function may be named as `NAME`, `NAME:QUALIFIER`, a partial ARN
//! `ACCOUNT:function:NAME[:QUALIFIER]` or a full ARN
//! `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`. A qualifier is `$LATEST`, a
//! published version number, or an alias name.

use std::fmt;

use crate::function::validate_name;

/// A parsed function reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

/// What a qualifier names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Latest,
    Version(u32),
    Alias(String),
}

impl Qualifier {
    pub fn parse(text: &str) -> Result<Qualifier, RefError> {
        if text == "$LATEST" {
            return Ok(Qualifier::Latest);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .map(Qualifier::Version)
                .ok_or_else(|| RefError::Qualifier(text.to_owned()));
        }
        validate_alias_name(text).map(|()| Qualifier::Alias(text.to_owned()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Latest => f.write_str("$LATEST"),
            Qualifier::Version(v) => write!(f, "{v}"),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    #[error(
        "{0:?} is not a function name or ARN; use NAME, NAME:QUALIFIER or arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]"
    )]
    Malformed(String),
    #[error("the ARN {arn:?} names region {got}; this Ember serves region {expected}")]
    Region {
        arn: String,
        got: String,
        expected: String,
    },
    #[error("the ARN {arn:?} names account {got}; this Ember serves account {expected}")]
    Account {
        arn: String,
        got: String,
        expected: String,
    },
    #[error("{0:?} is not a qualifier: use $LATEST, a version number or an alias name")]
    Qualifier(String),
    #[error(
        "alias name {0:?} is not valid: use 1 to 128 letters, digits, '-' and '_', not only digits"
    )]
    AliasName(String),
    #[error(
        "the qualifier in the function name ({in_name}) does not match the Qualifier parameter ({in_query})"
    )]
    Conflict { in_name: String, in_query: String },
}

/// Checks an alias name: 1–128 of `[A-Za-z0-9_-]`, not all digits (those are versions).
pub fn validate_alias_name(name: &str) -> Result<(), RefError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RefError::AliasName(name.to_owned()))
    }
}

impl FunctionRef {
    /// Parses any accepted form; ARNs must name this server's region and account.
    pub fn parse(input: &str, region: &str, account: &str) -> Result<FunctionRef, RefError> {
        let malformed = || RefError::Malformed(input.to_owned());
        let parts: Vec<&str> = input.split(':').collect();
        let (name, qualifier) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            [acct, "function", name] => {
                check_account(input, acct, account)?;
                (*name, None)
            }
            [acct, "function", name, q] => {
                check_account(input, acct, account)?;
                (*name, Some(*q))
            }
            ["arn", _, "lambda", reg, acct, "function", name, rest @ ..] if rest.len() <= 1 => {
                if *reg != region {
                    return Err(RefError::Region {
                        arn: input.into(),
                        got: (*reg).into(),
                        expected: region.into(),
                    });
                }
                check_account(input, acct, account)?;
                (*name, rest.first().copied())
            }
            _ => return Err(malformed()),
        };
        validate_name(name).map_err(|_| malformed())?;
        let qualifier = qualifier.map(Qualifier::parse).transpose()?;
        Ok(FunctionRef {
            name: name.to_owned(),
            qualifier,
        })
    }

    /// Merges a separate `Qualifier` parameter into the reference; the two must agree.
    pub fn with_qualifier(mut self, param: Option<&str>) -> Result<FunctionRef, RefError> {
        let Some(param) = param else { return Ok(self) };
        let param = Qualifier::parse(param)?;
        match &self.qualifier {
            Some(q) if *q != param => Err(RefError::Conflict {
                in_name: q.to_string(),
                in_query: param.to_string(),
            }),
            _ => {
                self.qualifier = Some(param);
                Ok(self)
            }
        }
    }
}

fn check_account(arn: &str, got: &str, expected: &str) -> Result<(), RefError> {
    if got == expected {
        Ok(())
    } else {
        Err(RefError::Account {
            arn: arn.into(),
            got: got.into(),
            expected: expected.into(),
        })
    }
}

/// The ARN of a function, with a qualifier when given.
pub fn function_arn(region: &str, account: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{account}:function:{name}"),
    }
}

/// (layer name, version) of `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION`.
pub fn parse_layer_version_arn(arn: &str) -> Option<(String, u32)> {
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "lambda", _, _, "layer", name, version] if validate_layer_name(name) => version
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .map(|v| ((*name).to_owned(), v)),
        _ => None,
    }
}

/// A layer name: 1–140 of `[A-Za-z0-9_-]`.
pub fn validate_layer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 140
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The ARN of a layer, or of one of its versions.
pub fn layer_arn(region: &str, account: &str, name: &str, version: Option<u32>) -> String {
    match version {
        Some(v) => format!("arn:aws:lambda:{region}:{account}:layer:{name}:{v}"),
        None => format!("arn:aws:lambda:{region}:{account}:layer:{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FunctionRef, RefError> {
        FunctionRef::parse(s, "us-east-1", "000000000000")
    }

    fn r(name: &str, q: Option<Qualifier>) -> FunctionRef {
        FunctionRef {
            name: name.into(),
            qualifier: q,
        }
    }

    #[test]
    fn every_form_of_function_reference_parses() {
        assert_eq!(parse("f"), Ok(r("f", None)));
        assert_eq!(parse("f:3"), Ok(r("f", Some(Qualifier::Version(3)))));
        assert_eq!(parse("f:$LATEST"), Ok(r("f", Some(Qualifier::Latest))));
        assert_eq!(
            parse("f:live"),
            Ok(r("f", Some(Qualifier::Alias("live".into()))))
        );
        assert_eq!(parse("000000000000:function:f"), Ok(r("f", None)));
        assert_eq!(
            parse("000000000000:function:f:7"),
            Ok(r("f", Some(Qualifier::Version(7))))
        );
        assert_eq!(
            parse("arn:aws:lambda:us-east-1:000000000000:function:f"),
            Ok(r("f", None))
        );
        assert_eq!(
            parse("arn:aws:lambda:us-east-1:000000000000:function:f:live"),
            Ok(r("f", Some(Qualifier::Alias("live".into()))))
        );
    }

    #[test]
    fn foreign_or_malformed_references_are_refused() {
        assert!(matches!(
            parse("arn:aws:lambda:eu-west-1:000000000000:function:f"),
            Err(RefError::Region { .. })
        ));
        assert!(matches!(
            parse("111111111111:function:f"),
            Err(RefError::Account { .. })
        ));
        assert!(matches!(
            parse("arn:aws:s3:::bucket"),
            Err(RefError::Malformed(_))
        ));
        assert!(matches!(parse("a:b:c:d:e"), Err(RefError::Malformed(_))));
        assert!(matches!(parse("bad name"), Err(RefError::Malformed(_))));
        assert!(matches!(parse("f:0"), Err(RefError::Qualifier(_))));
        assert!(matches!(parse("f:no/slash"), Err(RefError::AliasName(_))));
    }

    #[test]
    fn a_separate_qualifier_must_agree_with_the_name() {
        assert_eq!(
            parse("f").unwrap().with_qualifier(Some("2")),
            Ok(r("f", Some(Qualifier::Version(2))))
        );
        assert_eq!(
            parse("f:2").unwrap().with_qualifier(Some("2")),
            Ok(r("f", Some(Qualifier::Version(2))))
        );
        assert!(matches!(
            parse("f:2").unwrap().with_qualifier(Some("3")),
            Err(RefError::Conflict { .. })
        ));
    }

    #[test]
    fn layer_version_arns_parse() {
        assert_eq!(
            parse_layer_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps:3"),
            Some(("deps".into(), 3))
        );
        assert_eq!(
            parse_layer_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps"),
            None
        );
        assert_eq!(
            parse_layer_version_arn("arn:aws:lambda:us-east-1:000000000000:function:f:1"),
            None
        );
    }

    #[test]
    fn alias_names_cannot_look_like_versions() {
        assert!(validate_alias_name("prod").is_ok());
        assert!(validate_alias_name("123").is_err());
        assert!(validate_alias_name(&"a".repeat(129)).is_err());
    }
}
