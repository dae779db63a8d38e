"""moto's AWS API server for the `certs aws` tests, on a free loopback port.

Prints `port N` once listening, then serves until killed.

    python3 serve.py [--issuer-cert CA.pem --issuer-key CA.key.pem]

Plain, it is moto as installed. moto's CreateCertificateFromCsr does not certify the
CSR's key: it makes a fresh RSA key, puts that in the certificate and signs the
certificate with the same fresh key under the issuer name "C=US, O=Moto, OU=Server CA 1B,
CN=Moto" (moto/iot/models.py, `_generate_certificate_pem`). No CA certificate exists for
that name and the device's key does not match the certificate, so no broker could accept
it and `certs aws provision` refuses it (a test shows this).

With --issuer-cert/--issuer-key, that one call does what AWS does — certify the CSR's
own public key and subject — signed by the given CA (a `certs init` CA), so a broker
that trusts that CA accepts the device. Every other call is moto's own.
"""

import argparse
import datetime
import sys


def sign_csrs_with(issuer_cert_path, issuer_key_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from moto.iot import models

    with open(issuer_cert_path, "rb") as f:
        issuer_cert = x509.load_pem_x509_certificate(f.read())
    with open(issuer_key_path, "rb") as f:
        issuer_key = serialization.load_pem_private_key(f.read(), password=None)

    def create_certificate_from_csr(self, csr, set_as_active):
        request = x509.load_pem_x509_csr(csr.encode("utf-8"))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(issuer_cert.subject)
            .public_key(request.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(issuer_key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("utf-8")
        return self.register_certificate(
            pem, ca_certificate_pem=None, set_as_active=set_as_active, status="INACTIVE"
        )

    models.IoTBackend.create_certificate_from_csr = create_certificate_from_csr


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--issuer-cert")
    parser.add_argument("--issuer-key")
    args = parser.parse_args()
    if bool(args.issuer_cert) != bool(args.issuer_key):
        parser.error("--issuer-cert and --issuer-key go together")
    if args.issuer_cert:
        sign_csrs_with(args.issuer_cert, args.issuer_key)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
