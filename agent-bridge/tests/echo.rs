//! The echo backend: exact answer format, attachment hashes computed here from the bytes the
//! test wrote, streaming in pieces, and cancellation between pieces.

mod common;

use std::time::Duration;

use agent_bridge::{
    build_backend, AgentBackend, AgentConfig, AgentError, AgentEvent, EchoBackend, EchoConfig,
};
use common::{collect, turn};
use futures::StreamExt;
use gateway_core::{Attachment, MediaKind};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

fn sha16(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

#[tokio::test]
async fn the_default_backend_is_echo_and_echoes_text() {
    let b = build_backend(&AgentConfig::default()).expect("echo builds");
    assert_eq!(b.name(), "echo");
    let (deltas, end) = collect(
        b.start(turn("你好, world"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end.unwrap(), "echo: 你好, world");
    assert!(deltas.len() >= 3, "streamed in pieces: {deltas:?}");
    assert_eq!(deltas.concat(), "echo: 你好, world");
}

#[tokio::test]
async fn attachments_are_listed_with_size_and_hash_of_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let doc = b"quarterly numbers\n".to_vec();
    std::fs::write(dir.path().join("a.jpg"), &image).unwrap();
    std::fs::write(dir.path().join("r.pdf"), &doc).unwrap();
    let mut t = turn("see attached");
    t.attachments = vec![
        Attachment {
            kind: MediaKind::Image,
            path: dir.path().join("a.jpg"),
            name: "photo.jpg".into(),
            mime: "image/jpeg".into(),
            size: image.len() as u64,
        },
        Attachment {
            kind: MediaKind::File,
            path: dir.path().join("r.pdf"),
            name: "report.pdf".into(),
            mime: "application/pdf".into(),
            size: doc.len() as u64,
        },
        Attachment {
            kind: MediaKind::Voice,
            path: dir.path().join("missing.amr"),
            name: "voice.amr".into(),
            mime: "audio/amr".into(),
            size: 10,
        },
    ];
    let b = EchoBackend::new(&EchoConfig::default());
    let (deltas, end) = collect(b.start(t, CancellationToken::new()).await.unwrap()).await;
    let expected = format!(
        "echo: see attached\n[image photo.jpg 200000 bytes sha256:{}]\n[file report.pdf 18 bytes sha256:{}]\n[voice voice.amr unreadable: entity not found]",
        sha16(&image),
        sha16(&doc)
    );
    assert_eq!(end.unwrap(), expected);
    assert_eq!(deltas.concat(), expected);
}

#[tokio::test(start_paused = true)]
async fn delay_spaces_the_pieces_and_cancel_stops_between_them() {
    let cfg = EchoConfig {
        delay_ms: 1000,
        ..EchoConfig::default()
    };
    let b = EchoBackend::new(&cfg);

    let started = tokio::time::Instant::now();
    let (deltas, end) = collect(
        b.start(turn("abcdefgh"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end.unwrap(), "echo: abcdefgh");
    assert_eq!(deltas.len(), 4);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "three pauses between four pieces"
    );

    let cancel = CancellationToken::new();
    let mut stream = b.start(turn("abcdefgh"), cancel.clone()).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(AgentEvent::Delta(_)))
    ));
    cancel.cancel();
    assert_eq!(stream.next().await, Some(Err(AgentError::Cancelled)));
    assert_eq!(stream.next().await, None);
}

#[tokio::test(start_paused = true)]
async fn the_time_limit_applies_to_echo_too() {
    let cfg = EchoConfig {
        delay_ms: 10_000,
        timeout_secs: 5,
    };
    let b = EchoBackend::new(&cfg);
    let (deltas, end) = collect(
        b.start(turn("slow"), CancellationToken::new())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deltas.len(), 1);
    assert_eq!(
        end.unwrap_err(),
        AgentError::Timeout(Duration::from_secs(5))
    );
}
