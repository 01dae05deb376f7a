//! A webhook receiver on a free local port, for the tests of what the server sends: it keeps
//! what it was sent (headers, body) and answers 204, or 503 while it is "down".

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A receiver on a free local port: what it was sent (headers, body), and whether it answers
/// 503 (down) or 204.
#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// While set, the receiver answers 503.
    pub down: Arc<AtomicBool>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    if state.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    state.got.lock().unwrap().push((headers, body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    pub fn events(&self) -> Vec<(HeaderMap, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| (h.clone(), serde_json::from_str(b).unwrap()))
            .collect()
    }

    /// Every request's signature checked with the secret, by an HMAC computed here.
    pub fn check_signatures(&self, secret: &str) {
        for (headers, body) in self.got.lock().unwrap().iter() {
            let timestamp = headers["switchyard-timestamp"].to_str().unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{timestamp}.{body}").as_bytes());
            let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(headers["switchyard-signature"], expected.as_str(), "{body}");
        }
    }
}
