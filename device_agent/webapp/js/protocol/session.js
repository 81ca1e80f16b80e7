// The device's view of one broker connection, sans I/O (docs/protocol.md section 6.2;
// protocol/session.py ClientSession): bytes in -> a checked frame out, or a
// ProtocolError. AWAITING_HELLO --hello--> CONNECTED --welcome--> READY.

import { decodeFrame, MAX_FRAME_SIZE } from "./frames.js";
import { ProtocolError } from "./errors.js";

export const STATE = Object.freeze({ AWAITING_HELLO: "awaiting_hello", CONNECTED: "connected", READY: "ready" });

export class DeviceSession {
  constructor(maxFrame = MAX_FRAME_SIZE) {
    this.state = STATE.AWAITING_HELLO;
    this.maxFrame = maxFrame;
    this.hello = null;
    this.credentials = new Set(); // authenticated (or enrolled) on this connection
  }

  // A `cancel` of reason answered whose `by` names a credential of this connection:
  // this phone answered it through another connection (another tab or window). The
  // broker names no other device's credential (section 19).
  answeredHere(frame) {
    return frame.t === "cancel" && frame.reason === "answered" && typeof frame.by === "string" && this.credentials.has(frame.by);
  }

  get nonce() {
    return this.hello?.nonce ?? null;
  }

  // An unknown frame type throws a ProtocolError whose `fatal` is false: the caller
  // ignores it (section 3.2). Any other error is fatal for the connection.
  receive(data) {
    const frame = decodeFrame(data, this.maxFrame);
    if (frame.sender !== "broker") throw new ProtocolError("unexpected_frame", `${frame.t} is sent by devices`);
    if (this.state === STATE.AWAITING_HELLO) {
      if (frame.t !== "hello") throw new ProtocolError("unexpected_frame", "the first frame must be hello");
      this.hello = frame;
      this.state = STATE.CONNECTED;
    } else if (frame.t === "hello") {
      throw new ProtocolError("unexpected_frame", "hello sent twice");
    } else if (frame.t === "welcome") {
      for (const cid of frame.accepted) this.credentials.add(cid);
      this.state = STATE.READY;
    } else if (frame.t === "enrolled") {
      this.credentials.add(frame.cid);
    } else if ((frame.t === "challenge" || frame.t === "recovery_notice") && this.state !== STATE.READY) {
      throw new ProtocolError("unexpected_frame", `${frame.t} before welcome`);
    }
    return frame;
  }
}
