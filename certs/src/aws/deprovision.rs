//! `certs aws deprovision`: remove what provision recorded in the folder's manifest —
//! the certificate always, the thing and the policy only if provision created them.

use std::path::Path;

use aws_sdk_iot::types::CertificateStatus;

use super::errors::from_sdk;
use super::{IdentityKind, MANIFEST_FILE, Manifest, Progress, Session};
use crate::error::CertsError;

/// Is this a "no such object" answer (already removed: nothing to do)?
fn gone<E: aws_sdk_iot::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ResourceNotFoundException")
}

/// Undo `manifest` in AWS, printing a line per step.
pub async fn deprovision(
    session: &Session,
    manifest: &Manifest,
    progress: &mut Progress<'_>,
) -> Result<(), CertsError> {
    let client = &session.client;
    let region = session.region.as_str();
    let fail = |progress: &mut Progress<'_>, f| {
        progress.done("FAILED");
        CertsError::Aws(Box::new(f))
    };
    let arn = manifest.certificate_arn.as_str();
    let id = manifest.certificate_id.as_str();

    if manifest.kind == IdentityKind::Thing {
        progress.start(&format!(
            "detach thing {} from the certificate",
            manifest.name
        ));
        match client
            .detach_thing_principal()
            .thing_name(&manifest.name)
            .principal(arn)
            .send()
            .await
        {
            Ok(_) => progress.done("detached"),
            Err(e) if gone(&e) => progress.done("already gone"),
            Err(e) => return Err(fail(progress, from_sdk("DetachThingPrincipal", region, &e))),
        }
    }

    progress.start(&format!("detach policy {}", manifest.policy_name));
    match client
        .detach_policy()
        .policy_name(&manifest.policy_name)
        .target(arn)
        .send()
        .await
    {
        Ok(_) => progress.done("detached"),
        Err(e) if gone(&e) => progress.done("already gone"),
        Err(e) => return Err(fail(progress, from_sdk("DetachPolicy", region, &e))),
    }

    progress.start(&format!("certificate {id}"));
    match client
        .update_certificate()
        .certificate_id(id)
        .new_status(CertificateStatus::Inactive)
        .send()
        .await
    {
        Ok(_) => match client.delete_certificate().certificate_id(id).send().await {
            Ok(_) => progress.done("deactivated and deleted"),
            Err(e) if gone(&e) => progress.done("already gone"),
            Err(e) => return Err(fail(progress, from_sdk("DeleteCertificate", region, &e))),
        },
        Err(e) if gone(&e) => progress.done("already gone"),
        Err(e) => return Err(fail(progress, from_sdk("UpdateCertificate", region, &e))),
    }

    if manifest.kind == IdentityKind::Thing {
        progress.start(&format!("thing {}", manifest.name));
        if !manifest.thing_created {
            progress.done("kept (it existed before provision)");
        } else {
            match client
                .delete_thing()
                .thing_name(&manifest.name)
                .send()
                .await
            {
                Ok(_) => progress.done("deleted"),
                Err(e) if gone(&e) => progress.done("already gone"),
                Err(e) => return Err(fail(progress, from_sdk("DeleteThing", region, &e))),
            }
        }
    }

    progress.start(&format!("policy {}", manifest.policy_name));
    if !manifest.policy_created {
        progress.done("kept (it existed before provision)");
        return Ok(());
    }
    // Another principal may have been given the policy since: leave it to them.
    let targets = match client
        .list_targets_for_policy()
        .policy_name(&manifest.policy_name)
        .send()
        .await
    {
        Ok(out) => out.targets().len(),
        Err(e) if gone(&e) => {
            progress.done("already gone");
            return Ok(());
        }
        Err(e) => return Err(fail(progress, from_sdk("ListTargetsForPolicy", region, &e))),
    };
    if targets > 0 {
        progress.done(&format!(
            "kept (still attached to {targets} other principal(s))"
        ));
        return Ok(());
    }
    match client
        .delete_policy()
        .policy_name(&manifest.policy_name)
        .send()
        .await
    {
        Ok(_) => progress.done("deleted"),
        Err(e) if gone(&e) => progress.done("already gone"),
        Err(e) => return Err(fail(progress, from_sdk("DeletePolicy", region, &e))),
    }
    Ok(())
}

/// The folder's credentials are dead once the certificate is gone: remove the files
/// provision wrote, then the folder if nothing else is in it.
pub fn remove_outputs(dir: &Path, files: &[&str]) -> Result<(), CertsError> {
    for name in files.iter().chain([&MANIFEST_FILE]) {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CertsError::io(&path, e)),
        }
    }
    // Only empty folders go; anything the user added stays.
    let _ = std::fs::remove_dir(dir.join("device"));
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
