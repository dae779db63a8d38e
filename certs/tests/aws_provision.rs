//! `certs aws provision|observer|deprovision` against moto's AWS API server (a real HTTP
//! server speaking the AWS IoT API), started per test on a free port. The account's
//! state is read back with boto3, independently of the SDK under test.
//!
//! moto comes from `make deps`. Without it these tests fail, unless
//! CERTS_AWS_TESTS_MAY_SKIP=1 says skipping is acceptable.

#![cfg(feature = "aws")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Work;

const SERVE_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto/serve.py");
const REGION: &str = "eu-west-1";

/// moto's server, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Is moto importable? If not, fail unless the environment allows skipping.
fn moto_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CERTS_AWS_TESTS_MAY_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: moto is not installed (make deps) and CERTS_AWS_TESTS_MAY_SKIP=1");
        return false;
    }
    panic!(
        "moto is not installed: run `make deps` (pip install 'moto[server]'), or set \
         CERTS_AWS_TESTS_MAY_SKIP=1 to skip the AWS tests"
    );
}

impl Moto {
    /// moto as installed, or with CreateCertificateFromCsr signing the CSR's key by
    /// `issuer` (`ca.pem`, `ca.key.pem` of a `certs init` folder): see serve.py.
    fn start(issuer: Option<&Path>) -> Self {
        let mut command = Command::new("python3");
        command.arg(SERVE_PY);
        if let Some(dir) = issuer {
            command
                .arg("--issuer-cert")
                .arg(dir.join("ca.pem"))
                .arg("--issuer-key")
                .arg(dir.join("ca.key.pem"));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 serve.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("moto did not report its port within 60 s");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("moto said {line:?}, not `port N`"));
        Moto { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `certs ARGS` pointed at this moto with fake credentials, and nothing of the
    /// developer's AWS setup.
    fn certs(&self, work: &Work, args: &[&str]) -> Output {
        let mut command = work.certs_command(args);
        isolate(&mut command);
        command
            .env("AWS_ENDPOINT_URL", self.url())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION);
        command.output().expect("run certs")
    }

    /// The account as boto3 sees it: things, policies (default documents), certificates
    /// with status, and what is attached to what.
    fn state(&self) -> serde_json::Value {
        let script = r#"
import boto3, json, sys
iot = boto3.client("iot", endpoint_url=sys.argv[1], region_name=sys.argv[2],
                   aws_access_key_id="testing", aws_secret_access_key="testing")
certs = iot.list_certificates()["certificates"]
policies = {p["policyName"]: json.loads(iot.get_policy(policyName=p["policyName"])["policyDocument"])
            for p in iot.list_policies()["policies"]}
print(json.dumps({
    "things": sorted(t["thingName"] for t in iot.list_things()["things"]),
    "policies": policies,
    "certificates": {c["certificateId"]: c["status"] for c in certs},
    "policy_targets": {p: sorted(iot.list_targets_for_policy(policyName=p)["targets"]) for p in policies},
    "thing_principals": {t["thingName"]: sorted(iot.list_thing_principals(thingName=t["thingName"])["principals"])
                         for t in iot.list_things()["things"]},
}))
"#;
        let out = Command::new("python3")
            .args(["-c", script, &self.url(), REGION])
            .output()
            .expect("run boto3");
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Run one boto3 call, e.g. `create_thing(thingName="x")`.
    fn boto3(&self, call: &str) {
        let script = format!(
            "import boto3, sys\niot = boto3.client('iot', endpoint_url=sys.argv[1], region_name=sys.argv[2], aws_access_key_id='testing', aws_secret_access_key='testing')\niot.{call}"
        );
        let out = Command::new("python3")
            .args(["-c", &script, &self.url(), REGION])
            .output()
            .expect("run boto3");
        assert!(
            out.status.success(),
            "boto3 {call}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// No AWS configuration of the machine running the tests may leak in.
fn isolate(command: &mut Command) {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_IOT",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(var);
    }
    command
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        // No instance-metadata lookups (they would time out off EC2).
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_ok(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "certs failed:\n{stdout}\n{stderr}");
    stdout
}

/// The entries of `dir` (names), to show nothing was left behind.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A `certs init` folder whose CA stands in for AWS's certificate issuer.
fn issuer(work: &Work) -> PathBuf {
    work.certs_ok(&["init", "--out", "pki", "--thing", "issuer"]);
    work.path("pki")
}

fn manifest(work: &Work, dir: &str) -> serde_json::Value {
    serde_json::from_slice(&work.read(&format!("{dir}/aws-manifest.json"))).unwrap()
}

#[test]
fn fresh_provision_creates_everything_and_writes_a_working_folder() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    let stdout = assert_ok(&moto.certs(
        &work,
        &[
            "aws",
            "provision",
            "--thing",
            "bench-1",
            "--out",
            "out",
            "--wifi-ssid",
            "lab",
        ],
    ));
    for step in [
        "[1/5] key and certificate ... created certificate",
        "[2/5] thing bench-1 ... created",
        "[3/5] policy bench-1-policy ... created",
        "[4/5] attach policy and thing to the certificate ... attached",
        "[5/5] endpoint ... ",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    assert_eq!(
        entries(&work.path("out")),
        ["aws-manifest.json", "device", "flash.img", "policy.json"]
    );
    assert_eq!(
        entries(&work.path("out/device")),
        ["ca.der", "cert.der", "private.der"]
    );
    // Nothing but the output folder appeared beside it (no staging left over).
    assert_eq!(entries(work.dir.path()), ["out", "pki"]);

    let m = manifest(&work, "out");
    let state = moto.state();
    let cert_id = m["certificate_id"].as_str().unwrap();
    let cert_arn = m["certificate_arn"].as_str().unwrap();
    assert_eq!(state["things"], serde_json::json!(["bench-1"]));
    assert_eq!(state["certificates"][cert_id], "ACTIVE");
    assert_eq!(
        state["policy_targets"]["bench-1-policy"],
        serde_json::json!([cert_arn])
    );
    assert_eq!(
        state["thing_principals"]["bench-1"],
        serde_json::json!([cert_arn])
    );
    // The policy in AWS is the one `certs init` writes for a thing.
    let init_policy: serde_json::Value =
        serde_json::from_slice(&work.read("pki/policy.json")).unwrap();
    assert_eq!(state["policies"]["bench-1-policy"], init_policy);
    assert_eq!(m["thing_created"], true);
    assert_eq!(m["policy_created"], true);
    assert_eq!(m["region"], REGION);

    // The image holds what the device needs: the certificate moto returned, for our key,
    // Amazon Root CA 1, and the endpoint moto gave with the thing name as client id.
    let inspect = work.certs_ok(&["inspect", "out/flash.img"]);
    let endpoint = m["endpoint"].as_str().unwrap();
    assert!(
        endpoint.contains("iot.") && endpoint.contains(REGION),
        "{endpoint}"
    );
    for fragment in [endpoint, "bench-1", "Amazon Root CA 1", "lab"] {
        assert!(inspect.contains(fragment), "no {fragment:?} in:\n{inspect}");
    }
    assert_ok(&work.certs(&[
        "import",
        "--cert",
        "out/device/cert.der",
        "--key",
        "out/device/private.der",
        "--ca",
        "out/device/ca.der",
        "--out",
        "recheck",
    ]));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(work.path("out/device/private.der"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_second_run_reuses_certificate_thing_and_policy() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    let args = ["aws", "provision", "--thing", "bench-2", "--out", "out"];
    assert_ok(&moto.certs(&work, &args));
    let first = manifest(&work, "out");
    let first_key = work.read("out/device/private.der");
    let before = moto.state();

    let stdout = assert_ok(&moto.certs(&work, &args));
    for step in [
        "key and certificate ... reused certificate",
        "thing bench-2 ... reused",
        "policy bench-2-policy ... reused",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    // moto makes up a new endpoint name for every DescribeEndpoint (AWS's is fixed per
    // account); everything else must be what run 1 recorded.
    let mut second = manifest(&work, "out");
    second["endpoint"] = first["endpoint"].clone();
    assert_eq!(second, first, "the manifest still says what run 1 created");
    assert_eq!(work.read("out/device/private.der"), first_key);
    assert_eq!(
        moto.state(),
        before,
        "a re-run changes nothing in the account"
    );
    assert_eq!(entries(work.dir.path()), ["out", "pki"]);
}

#[test]
fn deprovision_removes_what_provision_created_and_only_that() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    // A thing that exists before provision is reused, and must survive deprovision.
    moto.boto3("create_thing(thingName='shared-thing')");
    let stdout = assert_ok(&moto.certs(
        &work,
        &[
            "aws",
            "provision",
            "--thing",
            "shared-thing",
            "--out",
            "out",
        ],
    ));
    assert!(stdout.contains("thing shared-thing ... reused"), "{stdout}");
    // Someone else's policy and certificate are not touched either.
    moto.boto3(
        "create_policy(policyName='other', policyDocument='{\"Version\":\"2012-10-17\",\"Statement\":[]}')",
    );

    let stdout = assert_ok(&moto.certs(
        &work,
        &[
            "aws",
            "deprovision",
            "--thing",
            "shared-thing",
            "--out",
            "out",
        ],
    ));
    for step in [
        "detach thing shared-thing from the certificate ... detached",
        "detach policy shared-thing-policy ... detached",
        "... deactivated and deleted",
        "thing shared-thing ... kept (it existed before provision)",
        "policy shared-thing-policy ... deleted",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    let state = moto.state();
    assert_eq!(state["things"], serde_json::json!(["shared-thing"]));
    assert_eq!(state["certificates"], serde_json::json!({}));
    assert_eq!(
        state["policies"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["other"]
    );
    assert!(
        !work.path("out").exists(),
        "the dead credentials are removed"
    );

    // Without a manifest there is nothing it may delete.
    let out = moto.certs(
        &work,
        &[
            "aws",
            "deprovision",
            "--thing",
            "shared-thing",
            "--out",
            "out",
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("aws-manifest.json") && stderr.contains("no provision manifest"),
        "{stderr}"
    );
}

#[test]
fn missing_credentials_are_named_before_any_call() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(None);
    let mut command = work.certs_command(&["aws", "provision", "--thing", "t", "--out", "out"]);
    isolate(&mut command);
    command
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_REGION", REGION);
    let out = command.output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NoCredentials"), "{stderr}");
    assert!(
        stderr.contains("AWS_ACCESS_KEY_ID") && stderr.contains("--profile"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was created"), "{stderr}");
    assert!(!work.path("out").exists());
    assert_eq!(moto.state()["certificates"], serde_json::json!({}));

    // No region anywhere is named too.
    let mut command = work.certs_command(&["aws", "provision", "--thing", "t", "--out", "out"]);
    isolate(&mut command);
    command
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    let out = command.output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--region") && stderr.contains("AWS_REGION"),
        "{stderr}"
    );
}

#[test]
fn a_policy_with_other_content_is_refused_with_the_difference_unless_forced() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    // The original tutorial's policy under the name provision would use.
    moto.boto3(
        "create_policy(policyName='bench-3-policy', policyDocument='{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:*\",\"Resource\":\"*\"}]}')",
    );
    let args = ["aws", "provision", "--thing", "bench-3", "--out", "out"];
    let out = moto.certs(&work, &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("policy bench-3-policy ... differs"),
        "{stdout}"
    );
    for fragment in [
        "policy bench-3-policy exists with other content",
        "-       \"Action\": \"iot:*\",",
        "+       \"Action\": \"iot:Connect\",",
        "--force",
        // What was created before the refusal, with how to remove it.
        "created in the AWS account before the failure",
        "thing bench-3",
        "aws iot delete-thing",
        "aws iot delete-certificate",
    ] {
        assert!(stderr.contains(fragment), "no {fragment:?} in:\n{stderr}");
    }
    assert_eq!(
        entries(work.dir.path()),
        ["pki"],
        "no output folder, no staging"
    );
    let wide: serde_json::Value = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]
    });
    assert_eq!(moto.state()["policies"]["bench-3-policy"], wide);

    let mut forced = args.to_vec();
    forced.push("--force");
    let stdout = assert_ok(&moto.certs(&work, &forced));
    assert!(
        stdout.contains("updated (--force: new default version)"),
        "{stdout}"
    );
    let init_policy: serde_json::Value =
        serde_json::from_slice(&work.read("pki/policy.json")).unwrap();
    assert_eq!(moto.state()["policies"]["bench-3-policy"], init_policy);
    assert_eq!(manifest(&work, "out")["policy_created"], false);
}

/// moto as installed certifies a key of its own, not the CSR's (see serve.py): provision
/// must refuse that certificate mid-way, write nothing, and list the certificate it had
/// created.
#[test]
fn a_certificate_for_another_key_fails_midway_without_output_and_lists_what_exists() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(None);
    let out = moto.certs(
        &work,
        &["aws", "provision", "--thing", "bench-4", "--out", "out"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("key and certificate ... FAILED"),
        "{stdout}"
    );
    let state = moto.state();
    let ids: Vec<&String> = state["certificates"].as_object().unwrap().keys().collect();
    assert_eq!(ids.len(), 1, "{state}");
    for fragment in [
        "AWS call CreateCertificateFromCsr failed: CertificateKeyMismatch",
        "created in the AWS account before the failure",
        &format!("certificate {}", ids[0]),
        &format!("--certificate-id {}", ids[0]),
    ] {
        assert!(stderr.contains(fragment), "no {fragment:?} in:\n{stderr}");
    }
    assert!(
        entries(work.dir.path()).is_empty(),
        "no output folder, no staging"
    );
}

/// AWS rejecting a call mid-way: a policy of that name already at AWS's limit of five
/// versions cannot take the new one (--force), after the certificate and the thing exist.
#[test]
fn an_aws_error_names_the_call_and_code_and_lists_created_objects() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    let doc = |n: u32| {
        format!(
            "'{{\"Version\":\"2012-10-17\",\"Statement\":[{{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"arn:aws:iot:*:*:client/v{n}\"}}]}}'"
        )
    };
    moto.boto3(&format!(
        "create_policy(policyName='full-policy', policyDocument={})",
        doc(1)
    ));
    for n in 2..=5 {
        moto.boto3(&format!(
            "create_policy_version(policyName='full-policy', policyDocument={}, setAsDefault=False)",
            doc(n)
        ));
    }
    let out = moto.certs(
        &work,
        &[
            "aws",
            "provision",
            "--thing",
            "bench-5",
            "--policy-name",
            "full-policy",
            "--out",
            "out",
            "--force",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[3/5] policy full-policy ... FAILED"),
        "{stdout}"
    );
    let state = moto.state();
    let ids: Vec<&String> = state["certificates"].as_object().unwrap().keys().collect();
    assert_eq!(ids.len(), 1, "{state}");
    for fragment in [
        "AWS call CreatePolicyVersion failed: VersionsLimitExceededException",
        "likely cause: the policy already has 5 versions",
        "created in the AWS account before the failure",
        &format!("certificate {}", ids[0]),
        "thing bench-5",
        "aws iot delete-thing --region eu-west-1 --thing-name bench-5",
    ] {
        assert!(stderr.contains(fragment), "no {fragment:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("policy full-policy\n"),
        "the policy was not created: {stderr}"
    );
    assert_eq!(
        entries(work.dir.path()),
        ["pki"],
        "no output folder, no staging"
    );
}

#[test]
fn a_thing_name_aws_would_refuse_is_refused_before_anything_is_created() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(None);
    let out = moto.certs(
        &work,
        &["aws", "provision", "--thing", "bad/name", "--out", "out"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--thing") && stderr.contains("bad/name"),
        "{stderr}"
    );
    assert_eq!(moto.state()["certificates"], serde_json::json!({}));
}

/// A workspace binary (`virtual-device`, `mock-broker`) beside this test's, built if
/// cargo has not built it yet (a package's tests get only its own binaries;
/// `cargo test --workspace` builds them all anyway).
fn workspace_binary(package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let find = || {
        exe.ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join(package))
            .find(|path| path.is_file())
    };
    if let Some(path) = find() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", package])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    find().unwrap_or_else(|| panic!("no {package} binary after building it"))
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The whole chain offline: moto provisions the thing (certificate for the device's key
/// from the CSR, signed by the test CA that stands in for AWS's issuer: see serve.py),
/// the mock broker trusts that CA and enforces the policy provision created, and the
/// virtual device boots from the flash.img provision wrote, connects, subscribes and
/// publishes.
#[test]
fn the_provisioned_image_boots_the_virtual_device_against_the_mock_broker() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let pki = issuer(&work);
    let moto = Moto::start(Some(&pki));
    let broker_bin = workspace_binary("mock-broker");
    let device_bin = workspace_binary("virtual-device");

    // The image names the broker's port, and the broker starts with the policy
    // provision created: reserve free ports (bind port 0, release) for both.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let sntp = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let endpoint = format!("localhost:{port}");
    let ntp = format!("127.0.0.1:{sntp}");
    assert_ok(&moto.certs(
        &work,
        &[
            "aws",
            "provision",
            "--thing",
            "chain-thing",
            "--out",
            "out",
            "--endpoint",
            &endpoint,
            "--server-ca",
            "pki/ca.pem",
            "--ntp",
            &ntp,
        ],
    ));
    let policy = moto.state()["policies"]["chain-thing-policy"].clone();
    work.write("aws-policy.json", policy.to_string());

    let mut broker = Command::new(&broker_bin)
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--sntp",
            &ntp,
            "--certs",
        ])
        .arg(&pki)
        .arg("--policy")
        .arg(work.path("aws-policy.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mock-broker");
    let ready = lines_of(&mut broker);
    let _broker = Killed(broker);
    let line = ready
        .recv_timeout(Duration::from_secs(30))
        .expect("mock-broker ready line within 30 s");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");

    let mut device = Command::new(&device_bin)
        .arg("--flash")
        .arg(work.path("out/flash.img"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start virtual-device");
    let log = lines_of(&mut device);
    let _device = Killed(device);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Subscribed to inTopic and two publishes to outTopic on one connection: the policy
    // allowed connect as the thing name, subscribe and publish (a denied publish ends the
    // connection, as on AWS).
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("device log so far:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line.contains("publish: topic=outTopic seq=2") {
            break;
        }
    }
    let log = seen.join("\n");
    for fragment in [
        "client_id=chain-thing",
        &format!("mqtt: connected endpoint={endpoint}"),
        "mqtt: subscribed topic=inTopic",
        "publish: topic=outTopic seq=1",
    ] {
        assert!(log.contains(fragment), "no {fragment:?} in:\n{log}");
    }
    assert_eq!(
        log.matches("mqtt: connecting").count(),
        1,
        "one connection:\n{log}"
    );
}

#[test]
fn the_observer_gets_a_certificate_and_the_observer_policy_and_goes_again() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    let stdout = assert_ok(&moto.certs(&work, &["aws", "observer", "--out", "obs"]));
    for step in [
        "[1/4] key and certificate ... created certificate",
        "[2/4] policy hil-observer-policy ... created",
        "[3/4] attach policy to the certificate ... attached",
        "make hil TARGET=aws ENDPOINT=",
        "OBSERVER_CERT=obs/observer.pem",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    assert_eq!(
        entries(&work.path("obs")),
        [
            "AmazonRootCA1.pem",
            "aws-manifest.json",
            "observer-policy.json",
            "observer.key.pem",
            "observer.pem"
        ]
    );
    let state = moto.state();
    // The observer policy `certs init` writes, and no thing.
    let init_policy: serde_json::Value =
        serde_json::from_slice(&work.read("pki/observer-policy.json")).unwrap();
    assert_eq!(state["policies"]["hil-observer-policy"], init_policy);
    assert_eq!(state["things"], serde_json::json!([]));
    // The key and certificate belong together (as hil loads them).
    assert_ok(&work.certs(&[
        "import",
        "--cert",
        "obs/observer.pem",
        "--key",
        "obs/observer.key.pem",
        "--ca",
        "pki/ca.pem",
        "--out",
        "recheck",
    ]));

    assert_ok(&moto.certs(
        &work,
        &[
            "aws",
            "deprovision",
            "--observer",
            "hil-observer",
            "--out",
            "obs",
        ],
    ));
    let state = moto.state();
    assert_eq!(state["certificates"], serde_json::json!({}));
    assert_eq!(state["policies"], serde_json::json!({}));
    assert!(!work.path("obs").exists());
}

/// A region that does not exist: the SDK cannot resolve its endpoint, and the error says
/// to check the region (no moto: the SDK's own endpoint for the region is used).
#[test]
fn a_wrong_region_is_named_as_the_likely_cause() {
    let work = Work::new();
    let mut command = work.certs_command(&[
        "aws",
        "provision",
        "--thing",
        "t",
        "--out",
        "out",
        "--region",
        "nowhere-1",
    ]);
    isolate(&mut command);
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    let out = command.output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for fragment in [
        "AWS call CreateCertificateFromCsr failed: DispatchFailure",
        "likely cause: cannot reach AWS IoT in region nowhere-1: check --region",
        "nothing was created in the AWS account",
    ] {
        assert!(stderr.contains(fragment), "no {fragment:?} in:\n{stderr}");
    }
    assert!(!work.path("out").exists());
}

#[test]
fn a_folder_provision_did_not_write_is_refused_before_anything_is_created() {
    if !moto_available() {
        return;
    }
    let work = Work::new();
    let moto = Moto::start(Some(&issuer(&work)));
    work.write("out/notes.txt", "mine");
    let out = moto.certs(
        &work,
        &["aws", "provision", "--thing", "bench-6", "--out", "out"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--out")
            && stderr.contains("has no aws-manifest.json")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(moto.state()["certificates"], serde_json::json!({}));
    assert_eq!(work.read("out/notes.txt"), b"mine");
}
