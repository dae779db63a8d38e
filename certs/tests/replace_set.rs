//! `certs import --force` replaces the credential set as a whole: if one file cannot be
//! replaced, the files already replaced are put back, never a new `cert.der` beside an
//! old `private.der`.

mod common;

use common::{Work, list_files};

const NAMES: [&str; 3] = ["cert.der", "private.der", "ca.der"];

/// Console-style downloads `set<n>-*` (a fresh key and certificate each, one root).
fn downloads(work: &Work, n: u32) -> [String; 3] {
    let (cert, key) = (format!("set{n}-cert.pem"), format!("set{n}-key.pem"));
    work.openssl_p256_key(&key);
    if !work.path("root.pem").exists() {
        work.openssl_root_ca("root.pem");
    }
    work.openssl_device_cert(&key, "root.pem", &cert, "365");
    [cert, key, "root.pem".to_string()]
}

fn import(work: &Work, files: &[String; 3], force: bool) -> std::process::Output {
    let mut args = vec![
        "import", "--cert", &files[0], "--key", &files[1], "--ca", &files[2], "--out", "out",
    ];
    if force {
        args.push("--force");
    }
    work.certs(&args)
}

#[test]
fn a_set_that_cannot_be_fully_replaced_is_left_as_it_was() {
    // Each file in turn cannot be replaced: a directory stands where it goes (a rename
    // over a directory fails for root too).
    for blocked in NAMES {
        let work = Work::new();
        let first = downloads(&work, 1);
        assert!(import(&work, &first, false).status.success());
        let second = downloads(&work, 2);
        let before: Vec<Option<Vec<u8>>> = NAMES
            .iter()
            .map(|n| (*n != blocked).then(|| work.read(&format!("out/{n}"))))
            .collect();
        std::fs::remove_file(work.path(&format!("out/{blocked}"))).unwrap();
        work.write(&format!("out/{blocked}/keep"), b"in the way");

        let out = import(&work, &second, true);
        assert_eq!(out.status.code(), Some(1), "{blocked}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("out/{blocked}")), "{stderr}");

        for (name, old) in NAMES.iter().zip(&before) {
            if let Some(old) = old {
                assert!(
                    work.read(&format!("out/{name}")) == *old,
                    "{name} changed although {blocked} could not be replaced"
                );
            }
        }
        assert!(work.path(&format!("out/{blocked}")).is_dir());
        // No staging folder or stray file left behind.
        let mut expected: Vec<String> = NAMES
            .iter()
            .filter(|n| **n != blocked)
            .map(|n| n.to_string())
            .collect();
        expected.push(format!("{blocked}/keep"));
        expected.sort();
        assert_eq!(list_files(&work.path("out")), expected, "{blocked}");
    }
}

#[test]
fn a_successful_force_replaces_every_file() {
    let work = Work::new();
    let first = downloads(&work, 1);
    assert!(import(&work, &first, false).status.success());
    let old_key = work.read("out/private.der");
    let second = downloads(&work, 2);
    assert!(import(&work, &second, true).status.success());
    assert_ne!(work.read("out/private.der"), old_key);
    // The new set is consistent: the image builder checks key against certificate.
    work.certs_ok(&["image", "--creds", "out", "--out", "flash.img"]);
    assert_eq!(
        list_files(&work.path("out")),
        ["ca.der", "cert.der", "private.der"]
    );
}
