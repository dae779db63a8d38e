use super::*;

mod image_failure {
    use super::*;
    use crate::config::DeviceConfig;
    use crate::image::{CredentialBuffers, format, mount};

    /// A real image with `files`, then the outcome of loading the credentials from it.
    fn load(files: &[(&str, &[u8])]) -> Result<(), ImageError> {
        let mut buf = vec![0xFFu8; 64 * 1024];
        let mut flash = &mut buf[..];
        format(&mut flash)?;
        mount(&mut flash, |fs| {
            files.iter().try_for_each(|(p, d)| fs.write_file(p, d))
        })?;
        let mut bufs = Box::new(CredentialBuffers::new());
        mount(&mut flash, |fs| fs.load_credentials(&mut bufs).map(drop))
    }

    fn config() -> std::string::String {
        serde_json::to_string(&DeviceConfig::new("localhost", "ESPthing").unwrap()).unwrap()
    }

    #[test]
    fn a_missing_file_is_named() {
        let json = config();
        let err = load(&[
            (image::CONFIG_PATH, json.as_bytes()),
            (image::CERT_PATH, b"c"),
            (image::CA_PATH, b"a"),
        ])
        .unwrap_err();
        let failure = ImageFailure::of(&err);
        assert_eq!(
            failure,
            ImageFailure::Creds {
                file: FlashFile::Key,
                error: LoadError::Missing
            }
        );
        assert_eq!(
            failure.creds_event(),
            Event::CredsFailed {
                file: FlashFile::Key,
                error: LoadError::Missing
            }
        );
    }

    #[test]
    fn config_problems_are_config_failures() {
        let err = load(&[(image::CERT_PATH, b"c")]).unwrap_err();
        let failure = ImageFailure::of(&err);
        assert_eq!(
            failure,
            ImageFailure::Config(ConfigFailure::Load(LoadError::Missing))
        );
        assert_eq!(
            failure.config_event(),
            Event::ConfigFailed(ConfigFailure::Load(LoadError::Missing))
        );

        let err = load(&[(image::CONFIG_PATH, b"{\"endpoint\":")]).unwrap_err();
        match ImageFailure::of(&err) {
            ImageFailure::Config(ConfigFailure::Invalid(e)) => {
                assert_eq!(e.field, "config.json", "{e:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversize_and_unmountable_images() {
        let json = config();
        let big = vec![1u8; image::MAX_CERT + 1];
        let err = load(&[
            (image::CONFIG_PATH, json.as_bytes()),
            (image::CA_PATH, &big),
        ]);
        // The config loads first, then the certificate is missing before the CA is read.
        assert_eq!(
            ImageFailure::of(&err.unwrap_err()),
            ImageFailure::Creds {
                file: FlashFile::Cert,
                error: LoadError::Missing
            }
        );
        let err = load(&[
            (image::CONFIG_PATH, json.as_bytes()),
            (image::CERT_PATH, &big),
        ]);
        assert_eq!(
            ImageFailure::of(&err.unwrap_err()),
            ImageFailure::Creds {
                file: FlashFile::Cert,
                error: LoadError::TooLarge
            }
        );

        // Erased flash: no filesystem at all.
        let mut blank = vec![0xFFu8; 64 * 1024];
        let mut flash = &mut blank[..];
        let err = mount(&mut flash, |_| Ok(())).unwrap_err();
        let failure = ImageFailure::of(&err);
        assert_eq!(
            failure,
            ImageFailure::Creds {
                file: FlashFile::Image,
                error: LoadError::Malformed
            }
        );
        assert_eq!(
            failure.config_failure(),
            ConfigFailure::Load(LoadError::Malformed)
        );
    }
}
