//! A toy platform for router tests: `FakePlatform` is the "server" (like the WeCom emulator, it
//! runs on 127.0.0.1:0, pushes user messages and records every frame it receives), and
//! `LoopbackAdapter` is a real `PlatformAdapter` that dials it and speaks JSON lines:
//!
//! platform → adapter: `{"type":"msg","id","user","chat","group","text"}`
//! adapter → platform: `{"type":"ack","id","admission"}`, `{"type":"start","id"}`,
//! `{"type":"update","id","text"}`, `{"type":"final","id","text","outcome"}`,
//! `{"type":"send","target","text"}`.
//!
//! It lives in tests only; it is not shipped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::adapter::{
    Capabilities, ConfigKey, InstanceSpec, KeyKind, MarkdownDialect, StreamingCaps,
};
use gateway_core::health::InstanceState;
use gateway_core::{
    AdapterContext, AdapterError, AdapterFactory, ChatAddress, ConfigError, Content,
    InboundMessage, OutboundMessage, PlatformAdapter, ReplySink, Sender, Target, TurnOutcome,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

// ---------------------------------------------------------------------------------------------
// The fake platform (server side).
// ---------------------------------------------------------------------------------------------

/// The platform side: accepts the adapter's connection, pushes messages, records frames.
pub struct FakePlatform {
    /// Where the adapter dials.
    pub addr: std::net::SocketAddr,
    frames: Arc<Mutex<Vec<Value>>>,
    changed: Arc<Notify>,
    to_adapter: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
    connected: Arc<Notify>,
    connections: Arc<Mutex<usize>>,
}

impl FakePlatform {
    /// Starts listening on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let to_adapter: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>> = Arc::default();
        let connected = Arc::new(Notify::new());
        let connections = Arc::new(Mutex::new(0));
        let (f, c, t, n, cc) = (
            frames.clone(),
            changed.clone(),
            to_adapter.clone(),
            connected.clone(),
            connections.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (rd, mut wr) = sock.into_split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                *t.lock().unwrap() = Some(tx);
                *cc.lock().unwrap() += 1;
                n.notify_waiters();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        if wr.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
                let (f, c) = (f.clone(), c.clone());
                tokio::spawn(async move {
                    let mut lines = BufReader::new(rd).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Ok(v) = serde_json::from_str::<Value>(&line) {
                            f.lock().unwrap().push(v);
                            c.notify_waiters();
                        }
                    }
                });
            }
        });
        Self {
            addr,
            frames,
            changed,
            to_adapter,
            connected,
            connections,
        }
    }

    /// Waits until the adapter has connected `n` times in total.
    pub async fn wait_connections(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = self.connected.notified();
                if *self.connections.lock().unwrap() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("adapter did not connect");
    }

    /// Pushes a DM from `user`.
    pub fn push_dm(&self, id: &str, user: &str, text: &str) {
        self.push(json!({"type":"msg","id":id,"user":user,"chat":user,"group":false,"text":text}));
    }

    /// Pushes a group message from `user` in `chat`.
    pub fn push_group(&self, id: &str, chat: &str, user: &str, text: &str) {
        self.push(json!({"type":"msg","id":id,"user":user,"chat":chat,"group":true,"text":text}));
    }

    fn push(&self, v: Value) {
        let guard = self.to_adapter.lock().unwrap();
        guard
            .as_ref()
            .expect("no adapter connected")
            .send(v.to_string())
            .unwrap();
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Value> {
        self.frames.lock().unwrap().clone()
    }

    /// Frames of `kind` about message `id`.
    pub fn frames_for(&self, kind: &str, id: &str) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| f["type"] == kind && f["id"] == id)
            .collect()
    }

    /// Waits (up to 30 s of real time) until `pred` holds over the received frames.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let r = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = self.changed.notified();
                let frames = self.frames();
                if pred(&frames) {
                    return frames;
                }
                notified.await;
            }
        })
        .await;
        match r {
            Ok(f) => f,
            Err(_) => panic!("timed out waiting for {what}; frames: {:#?}", self.frames()),
        }
    }

    /// Waits until the reply to `id` has started (its "thinking" bubble opened).
    pub async fn wait_started(&self, id: &str) {
        self.wait_for(&format!("start of {id}"), |f| {
            f.iter().any(|v| v["type"] == "start" && v["id"] == id)
        })
        .await;
    }

    /// Waits for the ack of `id` and returns its admission.
    pub async fn ack(&self, id: &str) -> String {
        let frames = self
            .wait_for(&format!("ack of {id}"), |f| {
                f.iter().any(|v| v["type"] == "ack" && v["id"] == id)
            })
            .await;
        let ack = frames
            .iter()
            .find(|v| v["type"] == "ack" && v["id"] == id)
            .unwrap();
        ack["admission"].as_str().unwrap().to_string()
    }

    /// Waits for the final reply to `id` and returns its text.
    pub async fn final_text(&self, id: &str) -> String {
        let frames = self
            .wait_for(&format!("final of {id}"), |f| {
                f.iter().any(|v| v["type"] == "final" && v["id"] == id)
            })
            .await;
        let fin = frames
            .iter()
            .find(|v| v["type"] == "final" && v["id"] == id)
            .unwrap();
        fin["text"].as_str().unwrap().to_string()
    }

    /// Waits until `n` finals for `id` were received and returns their texts.
    pub async fn finals(&self, id: &str, n: usize) -> Vec<String> {
        let frames = self
            .wait_for(&format!("{n} finals of {id}"), |f| {
                f.iter()
                    .filter(|v| v["type"] == "final" && v["id"] == id)
                    .count()
                    >= n
            })
            .await;
        frames
            .iter()
            .filter(|v| v["type"] == "final" && v["id"] == id)
            .map(|v| v["text"].as_str().unwrap().to_string())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The adapter (gateway side).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopbackConfig {
    addr: String,
    #[serde(default)]
    stream_interval_ms: Option<u64>,
}

/// Factory for kind `loopback`.
#[derive(Debug, Default)]
pub struct LoopbackFactory;

const KEYS: &[ConfigKey] = &[ConfigKey {
    name: "addr",
    kind: KeyKind::String,
    required: true,
    secret: false,
    env: Some("LOOPBACK_ADDR"),
    default: None,
    doc: "host:port of the fake platform",
}];

impl AdapterFactory for LoopbackFactory {
    fn kind(&self) -> &'static str {
        "loopback"
    }
    fn description(&self) -> &'static str {
        "test platform over TCP JSON lines"
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        KEYS
    }
    fn policy_env(&self) -> &'static [(&'static str, &'static str)] {
        &[("LOOPBACK_DM_POLICY", "dm_policy")]
    }
    fn build(
        &self,
        _instance: &InstanceSpec,
        extra: Value,
    ) -> Result<Arc<dyn PlatformAdapter>, Vec<ConfigError>> {
        let cfg: LoopbackConfig = gateway_core::adapter::parse_extra(extra).map_err(|e| vec![e])?;
        Ok(Arc::new(LoopbackAdapter {
            cfg,
            out: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        }))
    }
}

/// The adapter.
pub struct LoopbackAdapter {
    cfg: LoopbackConfig,
    out: Mutex<Option<mpsc::UnboundedSender<String>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl LoopbackAdapter {
    fn write(&self, v: Value) -> Result<(), AdapterError> {
        let guard = self.out.lock().unwrap();
        let tx = guard
            .as_ref()
            .ok_or_else(|| AdapterError::Disconnected("not connected".into()))?;
        tx.send(v.to_string())
            .map_err(|_| AdapterError::Disconnected("socket closed".into()))
    }
}

#[async_trait]
impl PlatformAdapter for LoopbackAdapter {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_bytes: 1 << 20,
            markdown: MarkdownDialect::None,
            streaming: Some(StreamingCaps {
                min_interval: Duration::from_millis(self.cfg.stream_interval_ms.unwrap_or(10)),
                max_frame_bytes: 1 << 20,
            }),
            ..Capabilities::default()
        }
    }

    async fn connect(&self, ctx: AdapterContext) -> Result<(), AdapterError> {
        let sock = TcpStream::connect(&self.cfg.addr)
            .await
            .map_err(|e| AdapterError::Io(format!("connect {}: {e}", self.cfg.addr)))?;
        let (rd, mut wr) = sock.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        *self.out.lock().unwrap() = Some(tx);
        let writer = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if wr.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let out = self.out.lock().unwrap().clone().unwrap();
        let health = ctx.health.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let user = v["user"].as_str().unwrap_or_default().to_string();
                let chat_id = v["chat"].as_str().unwrap_or_default().to_string();
                let chat = if v["group"].as_bool().unwrap_or(false) {
                    ChatAddress::group(chat_id)
                } else {
                    ChatAddress::dm(chat_id)
                };
                let msg = InboundMessage {
                    instance: ctx.instance.clone(),
                    message_id: id.clone(),
                    sender: Sender::new(user),
                    chat,
                    content: Content::Text {
                        text: v["text"].as_str().unwrap_or_default().into(),
                    },
                    quote: None,
                    received_at: chrono::Utc::now(),
                    reply_context: json!({"id": id}),
                };
                // Like a real platform: the ack goes out only after the router journaled it.
                let admission = match ctx.submit(msg).await {
                    Ok(a) => format!("{a:?}"),
                    Err(e) => format!("error: {e}"),
                };
                let _ = out.send(json!({"type":"ack","id":id,"admission":admission}).to_string());
            }
        });
        self.tasks.lock().unwrap().extend([writer, reader]);
        health.set_state(InstanceState::Connected);
        Ok(())
    }

    async fn disconnect(&self) {
        *self.out.lock().unwrap() = None;
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        let mut tasks = tasks.into_iter();
        let (writer, reader) = (tasks.next(), tasks.next());
        // The reader holds a sender: stop it first, so the channel closes once the writer has
        // written every frame already queued (a final queued just before shutdown must not be
        // lost with an aborted writer). Bounded, like a real adapter's flush.
        if let Some(r) = reader {
            r.abort();
        }
        if let Some(mut w) = writer {
            if tokio::time::timeout(Duration::from_secs(5), &mut w)
                .await
                .is_err()
            {
                w.abort();
            }
        }
    }

    async fn send(&self, target: &Target, message: &OutboundMessage) -> Result<(), AdapterError> {
        self.write(json!({"type":"send","target":target.to_string(),"text":message.body()}))
    }

    async fn reply(&self, inbound: &InboundMessage) -> Result<Box<dyn ReplySink>, AdapterError> {
        let tx = self
            .out
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| AdapterError::Disconnected("not connected".into()))?;
        Ok(Box::new(LoopbackSink {
            tx,
            id: inbound.message_id.clone(),
        }))
    }
}

struct LoopbackSink {
    tx: mpsc::UnboundedSender<String>,
    id: String,
}

impl LoopbackSink {
    fn write(&self, v: Value) -> Result<(), AdapterError> {
        self.tx
            .send(v.to_string())
            .map_err(|_| AdapterError::Disconnected("socket closed".into()))
    }
}

#[async_trait]
impl ReplySink for LoopbackSink {
    async fn start(&mut self) -> Result<(), AdapterError> {
        self.write(json!({"type":"start","id":self.id}))
    }
    async fn update(&mut self, text: &str) -> Result<(), AdapterError> {
        self.write(json!({"type":"update","id":self.id,"text":text}))
    }
    async fn finish(self: Box<Self>, text: &str, outcome: TurnOutcome) -> Result<(), AdapterError> {
        self.write(
            json!({"type":"final","id":self.id,"text":text,"outcome":format!("{outcome:?}")}),
        )
    }
}
