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
      this.state = STATE.READY;
    } else if ((frame.t === "challenge" || frame.t === "recovery_notice") && this.state !== STATE.READY) {
      throw new ProtocolError("unexpected_frame", `${frame.t} before welcome`);
    }
    return frame;
  }
}
