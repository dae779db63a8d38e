//! Names from certificates and flags are printed escaped, as the device log escapes them:
//! a CN or client id holding a newline or a terminal escape sequence cannot forge output
//! lines or drive the terminal.

mod common;

use common::Work;

/// A thing name that would start a fake line and clear the screen if printed raw.
const EVIL: &str = "thing\nwrote fake.der\x1b[2J";
const EVIL_SHOWN: &str = "thing\\x0awrote fake.der\\x1b[2J";

fn assert_clean(what: &str, stdout: &str) {
    assert!(
        !stdout.contains('\x1b'),
        "{what} printed a raw ESC: {stdout:?}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("wrote fake.der")),
        "{what} printed a forged line: {stdout}"
    );
}

#[test]
fn init_import_image_and_inspect_escape_names() {
    let work = Work::new();
    let init = work.certs_ok(&["init", "--out", "pki", "--thing", EVIL]);
    assert_clean("init", &init);
    assert!(init.contains(EVIL_SHOWN), "{init}");

    let import = work.certs_ok(&[
        "import",
        "--cert",
        "pki/device.pem",
        "--key",
        "pki/device.key.pem",
        "--ca",
        "pki/ca.pem",
        "--out",
        "out",
    ]);
    assert_clean("import", &import);
    assert!(import.contains(EVIL_SHOWN), "{import}");

    // The client id defaults to the CN: escaped as the device's `client_id=` field is
    // (spaces too).
    let image = work.certs_ok(&["image", "--creds", "out", "--out", "flash.img"]);
    assert_clean("image", &image);
    assert!(
        image.contains("client_id=thing\\x0awrote\\x20fake.der\\x1b[2J"),
        "{image}"
    );

    let inspect = work.certs_ok(&["inspect", "pki/device.pem"]);
    assert_clean("inspect", &inspect);
    assert!(inspect.contains(EVIL_SHOWN), "{inspect}");
    let inspect = work.certs_ok(&["inspect", "flash.img"]);
    assert_clean("inspect image", &inspect);
}

#[test]
fn a_client_id_flag_is_escaped_in_the_image_summary() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    let image = work.certs_ok(&[
        "image",
        "--creds",
        "pki/device",
        "--out",
        "flash.img",
        "--client-id",
        "id\r\x1b]0;title\x07",
        "--wifi-ssid",
        "ap\nx",
    ]);
    assert_clean("image", &image);
    assert!(
        !image.contains('\r') && !image.contains('\x07'),
        "{image:?}"
    );
    assert!(
        image.contains("client_id=id\\x0d\\x1b]0;title\\x07"),
        "{image}"
    );
    assert!(image.contains("wifi_ssid=ap\\x0ax"), "{image}");
}
