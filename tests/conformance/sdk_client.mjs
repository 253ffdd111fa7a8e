// Conformance client: drives the official WeCom AI Bot Node SDK (@wecom/aibot-node-sdk, pinned
// in package.json) against our openws emulator, so that tests/sdk_conformance.rs can check the
// emulator accepts what the real client sends (issue 11; reference wecom-aibot-official.md §2).
//
// Input (environment): WECOM_WS_URL, WECOM_BOT_ID, WECOM_SECRET, CONFORMANCE_UPLOAD (a file to
// upload). The Rust test plays the WeCom user: after `READY` it pushes one DM text and one group
// text, and taps the card this client sends into the group.
//
// Output: one line per completed step on stdout (`ok <step> ...`), `FAIL <step>: <why>` for a
// step that did not complete, then `DONE`. Exit 0 only if every step completed. SDK logs go to
// stderr.

import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { WSClient } from "@wecom/aibot-node-sdk";

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.log(`FAIL setup: ${name} is not set`);
    process.exit(2);
  }
  return v;
};
const wsUrl = env("WECOM_WS_URL");
const botId = env("WECOM_BOT_ID");
const secret = env("WECOM_SECRET");
const uploadPath = env("CONFORMANCE_UPLOAD");

// Per-step wait; the whole run is also capped so a stuck step cannot hang the Rust test.
const STEP_TIMEOUT_MS = 15000;
const RUN_TIMEOUT_MS = 90000;

const failures = [];
const ok = (step, detail = "") => console.log(`ok ${step}${detail ? " " + detail : ""}`);
const fail = (step, why) => {
  failures.push(step);
  console.log(`FAIL ${step}: ${why}`);
};
// A rejected SDK request carries the whole ack frame (errcode, errmsg), not an Error.
const describe = (err) => (err instanceof Error ? err.message : JSON.stringify(err));
// The SDK's id format, `<prefix>_<ms>_<hex8>` (reference §1.3), for stream ids and task ids.
const mintId = (prefix) => `${prefix}_${Date.now()}_${randomBytes(4).toString("hex")}`;

/** A promise with its resolver, plus a timeout that rejects it. */
function waiter(what) {
  let resolve;
  const p = new Promise((res, rej) => {
    resolve = res;
    setTimeout(() => rej(new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`)),
      STEP_TIMEOUT_MS).unref();
  });
  // Marked handled: a wait that times out before its step runs must not crash the process.
  p.catch(() => {});
  return { promise: p, resolve };
}

const client = new WSClient({
  botId,
  secret,
  wsUrl,
  // A short heartbeat so a ping goes out within a second of subscribing (default 30 s).
  heartbeatInterval: 1000,
  // A dropped connection must fail the run, not be papered over by a reconnect.
  maxReconnectAttempts: 0,
  maxAuthFailureAttempts: 0,
  logger: {
    debug: (m, ...a) => console.error("[sdk debug]", m, ...a),
    info: (m, ...a) => console.error("[sdk info]", m, ...a),
    warn: (m, ...a) => console.error("[sdk warn]", m, ...a),
    error: (m, ...a) => console.error("[sdk error]", m, ...a),
  },
});

const authenticated = waiter("the subscribe ack");
const heartbeat = waiter("a ping ack with errcode 0");
const dm = waiter("a DM text callback");
const group = waiter("a group text callback");
const cardEvents = new Map(); // task_id -> waiter for its template_card_event

client.on("connected", () => {
  // The SDK keeps ping acks to itself; watch the socket (read-only) to see one arrive. The
  // private field name is that of the pinned SDK version.
  const ws = client.wsManager?.ws;
  ws?.on("message", (data) => {
    try {
      const frame = JSON.parse(data.toString());
      const reqId = frame?.headers?.req_id ?? "";
      if (!frame.cmd && reqId.startsWith("ping") && frame.errcode === 0) {
        heartbeat.resolve(reqId);
      }
    } catch {
      // Not JSON: the SDK logs it itself.
    }
  });
});
client.on("authenticated", () => authenticated.resolve());
client.on("disconnected", (reason) => console.error(`[conformance] disconnected: ${reason}`));
client.on("reconnecting", (n) => fail("connection", `the SDK is reconnecting (attempt ${n})`));
client.on("error", (e) => console.error(`[conformance] SDK error: ${describe(e)}`));

client.on("message.text", (frame) => {
  if (frame.body?.chattype === "group") group.resolve(frame);
  else dm.resolve(frame);
});
client.on("event.template_card_event", (frame) => {
  // The plugin reads the nested object, the SDK types the flat fields (reference §0 #19).
  const ev = frame.body?.event ?? {};
  const taskId = ev.template_card_event?.task_id ?? ev.task_id;
  cardEvents.get(taskId)?.resolve(frame);
});

/** Runs one step, recording its failure instead of stopping the run. */
async function step(name, fn) {
  try {
    const detail = await fn();
    ok(name, detail ?? "");
    return true;
  } catch (err) {
    fail(name, describe(err));
    return false;
  }
}

/** DM: a streamed reply, one stream id, cumulative content, then the visible final frame. */
async function streamReply(frame) {
  const streamId = mintId("stream");
  const parts = ["<think></think>", "Conformance", "Conformance stream:", "Conformance stream: frame 3"];
  for (const content of parts) {
    await client.replyStream(frame, streamId, content, false);
  }
  await client.replyStream(frame, streamId, "Conformance stream: done.", true);
  return `frames=${parts.length + 1} stream_id=${streamId}`;
}

/** Group: a passive template card, then the update after the user's tap. */
async function cardReplyAndUpdate(frame) {
  const taskId = mintId("conformance");
  const tapped = waiter(`the template_card_event for ${taskId}`);
  cardEvents.set(taskId, tapped);
  const card = {
    card_type: "button_interaction",
    main_title: { title: "Conformance card", desc: "Tap to confirm" },
    button_list: [{ text: "Confirm", style: 1, key: "btn_confirm" }],
    task_id: taskId,
  };
  const replied = await step("card_reply", async () => {
    await client.replyTemplateCard(frame, card);
    return `task_id=${taskId}`;
  });
  if (!replied) {
    // The tap still comes (the test taps whatever card it saw), so the update is still tried.
    console.error("[conformance] card reply failed; still waiting for the tap");
  }
  await step("card_update", async () => {
    const event = await tapped.promise;
    const updated = {
      ...card,
      main_title: { title: "Conformance card", desc: "Confirmed" },
      button_list: [{ text: "Confirmed", style: 1, key: "btn_confirm" }],
    };
    await client.updateTemplateCard(event, updated, [event.body.from.userid]);
    return `task_id=${taskId} event_req_id=${event.headers.req_id}`;
  });
}

const runCap = setTimeout(() => {
  console.log(`FAIL run: not finished after ${RUN_TIMEOUT_MS} ms`);
  process.exit(3);
}, RUN_TIMEOUT_MS);
runCap.unref();

client.connect();

if (!(await step("subscribe", () => authenticated.promise))) {
  console.log("DONE");
  process.exit(1);
}
console.log("READY");

await step("heartbeat", async () => `req_id=${await heartbeat.promise}`);

let dmFrame = null;
let groupFrame = null;
await step("dm_received", async () => {
  dmFrame = await dm.promise;
  return `req_id=${dmFrame.headers.req_id}`;
});
await step("group_received", async () => {
  groupFrame = await group.promise;
  return `req_id=${groupFrame.headers.req_id}`;
});
if (dmFrame) await step("stream_reply", () => streamReply(dmFrame));
if (groupFrame) await cardReplyAndUpdate(groupFrame);

// Proactive sends go to `chatid || from.userid`, as the official plugin addresses them.
const dmChat = dmFrame?.body?.from?.userid;
const groupChat = groupFrame?.body?.chatid;

let mediaId = null;
await step("upload", async () => {
  const bytes = readFileSync(uploadPath);
  const res = await client.uploadMedia(bytes, { type: "file", filename: "conformance.bin" });
  mediaId = res.media_id;
  return `media_id=${mediaId} bytes=${bytes.length} chunks=${Math.ceil(bytes.length / 524288)}`;
});
if (dmChat) {
  await step("send_dm_markdown", async () => {
    await client.sendMessage(dmChat, { msgtype: "markdown", markdown: { content: "Conformance: proactive **markdown** to a DM." } });
    return `chatid=${dmChat}`;
  });
  if (mediaId) {
    await step("send_dm_file", async () => {
      await client.sendMediaMessage(dmChat, "file", mediaId);
      return `chatid=${dmChat} media_id=${mediaId}`;
    });
  }
}
if (groupChat) {
  await step("send_group_markdown", async () => {
    await client.sendMessage(groupChat, { msgtype: "markdown", markdown: { content: "Conformance: proactive **markdown** to a group." } });
    return `chatid=${groupChat}`;
  });
  await step("send_group_card", async () => {
    await client.sendMessage(groupChat, {
      msgtype: "template_card",
      template_card: {
        card_type: "text_notice",
        main_title: { title: "Conformance notice" },
        card_action: { type: 1, url: "https://work.weixin.qq.com" },
        task_id: mintId("notice"),
      },
    });
    return `chatid=${groupChat}`;
  });
}

client.disconnect();
console.log("DONE");
process.exit(failures.length === 0 ? 0 : 1);
