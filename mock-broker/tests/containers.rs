//! The interop checks of `tests/second_broker.rs` against third-party broker images run
//! with testcontainers ([`interop::MOSQUITTO_IMAGE`]).
//!
//! They need a Docker daemon. Without one each check is reported as ignored with the
//! reason (libtest has no runtime skip, hence this libtest-mimic runner), except on
//! GitHub Actions (`CI=true` and `GITHUB_ACTIONS` set), where the hosted runners have a
//! daemon: there a missing one fails the checks, so they cannot silently never run.

mod common;
mod interop;

use std::future::Future;
use std::pin::Pin;
use std::process::Command;

use common::Rig;
use interop::Broker;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

type Check = for<'a> fn(&'a Rig, &'a Broker) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

const CHECKS: [(&str, Check); 3] = [
    ("round_trip_in_both_versions", |rig, broker| {
        Box::pin(interop::round_trip_in_both_versions(rig, broker))
    }),
    (
        "refuses_clients_without_a_trusted_certificate",
        |rig, broker| {
            Box::pin(interop::refuses_clients_without_a_trusted_certificate(
                rig, broker,
            ))
        },
    ),
    ("eight_slash_topic_is_plain_mqtt", |rig, broker| {
        Box::pin(interop::eight_slash_topic_only_aws_refuses(rig, broker))
    }),
];

/// Why no Docker daemon can be used, or `None` if one answers.
fn no_docker_daemon() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Some(format!("no Docker daemon (docker CLI: {e})")),
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim();
            Some(format!("no Docker daemon (docker info: {said})"))
        }
    }
}

fn on_github_actions() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true") && std::env::var_os("GITHUB_ACTIONS").is_some()
}

/// Start the image and run `check` against it.
fn run_check(check: Check) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let rig = Rig::new();
        let broker = Broker::mosquitto_container(&rig).await?;
        check(&rig, &broker).await;
        broker.stop().await;
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let skip = no_docker_daemon();
    if let Some(reason) = &skip {
        eprintln!("containers: skipped: {reason}");
    }
    let strict = on_github_actions();
    let (image, tag) = interop::MOSQUITTO_IMAGE;
    let trials = CHECKS
        .into_iter()
        .map(|(name, check)| {
            let skip = skip.clone();
            Trial::ignorable_test(format!("{image}-{tag}::{name}"), move || match skip {
                Some(reason) if strict => Err(format!(
                    "{reason}; on GitHub Actions a daemon is expected, so this fails instead of skipping"
                )
                .into()),
                Some(reason) => Ok(Completion::ignored_with(format!("skipped: {reason}"))),
                None => run_check(check).map(|()| Completion::Completed),
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
