//! The Bearer-token flow that Docker Hub, GHCR and most hosted registries use:
//! docker-registry with `auth: token`, and a small token server here that
//! checks Basic credentials and issues ES256 JWTs (certificate in `x5c`) for
//! the scopes asked.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use common::{FakeServer, ImageSpec, Layer, Registry, Reply, Request};
use pinacle_oci::{Credentials, OciError, Reference, Store};

const SERVICE: &str = "pinacle-test-registry";
const ISSUER: &str = "pinacle-test-issuer";
const USER: &str = "alice";
const PASSWORD: &str = "t0ken-s3cret";

struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    issued: AtomicUsize,
}

impl Issuer {
    fn new() -> Result<(Issuer, String)> {
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["token-issuer".to_string()])?.self_signed(&key)?;
        let rng = ring::rand::SystemRandom::new();
        let signing = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("loading the key: {e}"))?;
        Ok((
            Issuer {
                key: signing,
                cert_der: cert.der().to_vec(),
                issued: AtomicUsize::new(0),
            },
            cert.pem(),
        ))
    }

    /// A token for `account` granting `scopes` (`repository:NAME:ACTIONS`).
    fn token(&self, account: &str, scopes: &[String]) -> Result<String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": account, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 30, "iat": now - 30, "jti": format!("t{n}"),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(serde_json::to_vec(&header)?),
            b64.encode(serde_json::to_vec(&claims)?)
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(format!("{signing_input}.{}", b64.encode(sig.as_ref())))
    }

    /// The token endpoint: Basic `USER:PASSWORD` gets what it asks; anything else 401.
    fn answer(&self, req: &Request) -> Reply {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        let query = req.path.split_once('?').map_or("", |(_, q)| q);
        let scopes: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.into_owned())
            .collect();
        let token = match req.authorization.as_deref() {
            Some(a) if a == expected => self.token(USER, &scopes),
            _ => {
                return Reply {
                    status: 401,
                    body: br#"{"details":"invalid credentials"}"#.to_vec(),
                    cut_after: None,
                    headers: Vec::new(),
                }
            }
        };
        match token {
            Ok(t) => Reply {
                status: 200,
                body: serde_json::json!({"token": t, "expires_in": 300})
                    .to_string()
                    .into_bytes(),
                cut_after: None,
                headers: Vec::new(),
            },
            Err(e) => Reply {
                status: 500,
                body: e.to_string().into_bytes(),
                cut_after: None,
                headers: Vec::new(),
            },
        }
    }
}

#[tokio::test]
async fn bearer_token_flow_with_basic_credentials() -> Result<()> {
    let (issuer, cert_pem) = Issuer::new()?;
    let issuer = Arc::new(issuer);
    let answering = issuer.clone();
    let token_server = FakeServer::start(Arc::new(move |req: &Request| answering.answer(req)))?;
    let reg = Registry::start_with_token_auth(
        &format!("http://{}/token", token_server.host()),
        SERVICE,
        ISSUER,
        &cert_pem,
        (USER, PASSWORD),
    )?;
    reg.push(
        ImageSpec::new().layer(Layer::new().file("secret", b"behind a token", 0o600)),
        "team/tokened:v1",
    )
    .context("pushing through the token flow")?;
    let pushed_with = issuer.issued.load(Ordering::Relaxed);
    assert!(pushed_with > 0, "skopeo got its tokens from our issuer");

    let tmp = tempfile::tempdir()?;
    let store = Store::new(tmp.path().join("store"), vec![reg.host()])?;
    let r = Reference::parse(&format!("{}/team/tokened:v1", reg.host()))?;
    for creds in [
        Credentials::Anonymous,
        Credentials::Basic {
            username: USER.into(),
            password: "wrong".into(),
        },
    ] {
        let e = store
            .pull(&r, &creds, &|_| {})
            .await
            .err()
            .with_context(|| format!("pulled with {creds:?}"))?;
        assert!(
            matches!(e, OciError::AuthRefused { .. }),
            "{creds:?}: {e:?}"
        );
    }
    let img = store
        .pull(
            &r,
            &Credentials::Basic {
                username: USER.into(),
                password: PASSWORD.into(),
            },
            &|_| {},
        )
        .await?;
    assert_eq!(std::fs::read(img.rootfs.join("secret"))?, b"behind a token");
    assert!(
        issuer.issued.load(Ordering::Relaxed) > pushed_with,
        "the pull used a token"
    );
    Ok(())
}
