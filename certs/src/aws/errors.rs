//! What went wrong on the AWS side, said so a user can act: which call, AWS's error
//! code, the likely cause, and the objects already created (to clean up by hand).

use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub use crate::error::{AwsFailure, Created};

/// The IAM action each call needs, for "missing permission" hints.
pub fn iam_action(call: &str) -> String {
    format!("iot:{call}")
}

/// Turn an SDK error into a failure of `call`, with the likely cause.
pub fn from_sdk<E>(call: &'static str, region: &str, err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let chain = DisplayErrorContext(err).to_string();
    let status = err
        .raw_response()
        .map(|r| format!(" (HTTP {})", r.status().as_u16()))
        .unwrap_or_default();
    let (code, detail) = match err {
        SdkError::ServiceError(_) => (
            err.code().unwrap_or("UnknownError").to_string(),
            format!("{}{status}", err.message().unwrap_or("(no message)")),
        ),
        SdkError::DispatchFailure(_) => ("DispatchFailure".to_string(), error_chain(err)),
        SdkError::TimeoutError(_) => ("Timeout".to_string(), error_chain(err)),
        SdkError::ConstructionFailure(_) => ("ConstructionFailure".to_string(), error_chain(err)),
        _ => (
            "ResponseError".to_string(),
            format!("{}{status}", error_chain(err)),
        ),
    };
    let cause = likely_cause(call, region, &code, &chain);
    AwsFailure {
        call,
        code,
        detail,
        cause,
        created: Vec::new(),
    }
}

/// An error and its sources, each once, joined by `: ` (the SDK's own context text adds
/// a Debug dump, too much for a person).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The most likely reason for `code` (or the error chain text) on `call`.
pub fn likely_cause(call: &str, region: &str, code: &str, chain: &str) -> String {
    let lower = chain.to_ascii_lowercase();
    match code {
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedException" => format!(
            "missing permission: the identity needs IAM action {} (on the resource named above)",
            iam_action(call)
        ),
        "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidSignatureException" => {
            "the credentials are not valid for AWS (wrong or deleted access key, or a secret key \
             that does not belong to it)"
                .into()
        }
        "ExpiredTokenException" | "ExpiredToken" => {
            "the session credentials have expired: renew them (`aws sso login`, or new STS \
             credentials)"
                .into()
        }
        "ThrottlingException" | "LimitExceededException" => {
            "AWS rate or quota limit: wait and run again, or raise the quota".into()
        }
        "ResourceAlreadyExistsException" => {
            "an object of that name exists with different content".into()
        }
        "VersionsLimitExceededException" => {
            "the policy already has 5 versions, AWS's limit: delete an old non-default one \
             (aws iot list-policy-versions / delete-policy-version) or use --policy-name"
                .into()
        }
        "InvalidRequestException" => "AWS refused the request's content (see the message)".into(),
        _ if lower.contains("credential") => {
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, pass --profile, \
             or log in (`aws configure`, `aws sso login`)"
                .into()
        }
        _ if lower.contains("dns")
            || lower.contains("resolve")
            || lower.contains("connect")
            || lower.contains("io error") =>
        {
            format!(
                "cannot reach AWS IoT in region {region}: check --region (or AWS_REGION / the \
                 profile's region) and the network"
            )
        }
        _ => "see AWS's message above".into(),
    }
}
