// Run inside the web authenticator's page (Playwright page.evaluate) with
// docs/test-vectors.json as the argument: every signing, frame, decode, device
// rejection, URI, purpose and text vector against the app's own modules. Returns
// {checked: {group: count}, failures: [text]}; the Python test asserts no failures.
async (vectors) => {
  const base = new URL("js/", document.baseURI).href;
  const bytes = await import(base + "protocol/bytes.js");
  const signing = await import(base + "protocol/signing.js");
  const frames = await import(base + "protocol/frames.js");
  const { DeviceSession } = await import(base + "protocol/session.js");
  const { parseEnrollmentUri } = await import(base + "protocol/uri.js");
  const { isSetupTest, purposeOf } = await import(base + "protocol/purpose.js");
  const text = await import(base + "protocol/text.js");
  const keys = await import(base + "keys.js");
  const { hex, fromHex } = bytes;
  const failures = [];
  const checked = {};
  const count = (group) => (checked[group] = (checked[group] ?? 0) + 1);
  const expect = (ok, what) => ok || failures.push(what);
  const orNull = (h) => (h === null ? null : fromHex(h));

  // {bin: hex} in the vectors <-> Uint8Array; Map -> object; keys sorted for comparison.
  const toJs = (v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.keys(v).length === 1 && "bin" in v
        ? fromHex(v.bin)
        : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJs(x)]))
      : Array.isArray(v) ? v.map(toJs) : v;
  const canon = (v) => {
    if (v instanceof Uint8Array) return { bin: hex(v) };
    if (v instanceof Map) v = Object.fromEntries(v);
    if (Array.isArray(v)) return v.map(canon);
    if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]));
    if (typeof v === "bigint") return Number(v);
    return v;
  };
  const same = (a, b) => JSON.stringify(canon(a)) === JSON.stringify(canon(b));

  async function checkSignature(group, i, seedHex, pkHex, msg, sigHex) {
    const key = await keys.keyFromSeed(fromHex(seedHex));
    const jwk = await crypto.subtle.exportKey("jwk", key);
    const pk = bytes.b64urlDecode(jwk.x);
    expect(hex(pk) === pkHex, `${group}[${i}]: public key ${hex(pk)} != ${pkHex}`);
    const sig = await keys.sign(key, msg);
    expect(hex(sig) === sigHex, `${group}[${i}]: signature ${hex(sig)} != ${sigHex}`);
    expect(await keys.verify(pk, msg, fromHex(sigHex)), `${group}[${i}]: the vector's signature does not verify`);
  }

  const S = vectors.signing;
  const builders = {
    auth: (v) => signing.authBytes(fromHex(v.nonce), v.cid),
    enroll: (v) => signing.enrollBytes(fromHex(v.nonce), v.token, fromHex(v.public_key), v.device_name, orNull(v.recovery_pk)),
    binding: (v) => signing.bindingBytes(v.rp, v.token, fromHex(v.es), fromHex(v.public_key), v.device_name, orNull(v.recovery_pk)),
    answer: (v) => signing.answerBytes({ rp: v.rp, ch: v.ch, nonce: fromHex(v.nonce), rpNonce: fromHex(v.rp_nonce), cid: v.cid, decision: v.decision, number: v.number, ts: v.ts, ctxHash: fromHex(v.ctx_hash) }),
    backup: (v) => signing.backupBytes(v.op, v.blob_id, v.ts, fromHex(v.body_sha256)),
    recovery_key: (v) => signing.recoveryKeyBytes(v.cid, fromHex(v.recovery_pk), v.ts),
    recovery_answer: (v) => signing.recoveryAnswerBytes(v.notice, v.cid, v.new_cid, v.decision, v.ts),
  };
  for (const [group, build] of Object.entries(builders)) {
    for (const [i, v] of S[group].entries()) {
      const msg = build(v);
      expect(hex(msg) === v.signing_bytes, `${group}[${i}]: signing bytes ${hex(msg)} != ${v.signing_bytes}`);
      if (group === "answer") {
        const h = await signing.contextHash(v.context);
        expect(hex(h) === v.ctx_hash, `answer[${i}]: context hash`);
      }
      if (group === "binding") expect(hex(bytes.b64urlDecode(v.es_b64)) === v.es, `binding[${i}]: es_b64`);
      await checkSignature(group, i, v.seed, v.public_key, msg, v.signature);
      count(`signing.${group}`);
    }
  }
  for (const [i, v] of S.recover.entries()) {
    const msg = signing.recoverBytes(v.rp, v.old_cid, fromHex(v.pk), v.device_name, fromHex(v.new_recovery_pk), v.ts);
    expect(hex(msg) === v.signing_bytes, `recover[${i}]: signing bytes`);
    await checkSignature("recover(recovery key)", i, v.recovery_seed, v.recovery_key, msg, v.recovery_signature);
    await checkSignature("recover(new key)", i, v.new_seed, v.pk, msg, v.signature);
    count("signing.recover");
  }
  // Keys and signatures verifiers must treat alike (docs/protocol.md section 9): the
  // app's verify, whatever the browser's Ed25519 does with them by itself.
  for (const [i, v] of S.ed25519.entries()) {
    const ok = await keys.verify(fromHex(v.public_key), fromHex(v.message), fromHex(v.signature));
    expect(ok === v.valid, `ed25519[${i}] ${v.name}: verify says ${ok}, the vector ${v.valid}`);
    const why = keys.refusal(fromHex(v.public_key), fromHex(v.signature));
    const want = v.rejected_for === "equation" ? null : v.rejected_for;
    expect(why === want, `ed25519[${i}] ${v.name}: refusal ${why}, the vector ${want}`);
    count("signing.ed25519");
  }
  for (const [i, v] of S.context_hash.entries()) {
    const h = await signing.contextHash(v.context);
    expect(hex(h) === v.hash, `context_hash[${i}]: ${hex(h)} != ${v.hash}`);
    count("signing.context_hash");
  }

  // Frames: encoded byte for byte (section 4.1's order), and decoded back to the fields.
  for (const [i, v] of vectors.frames.entries()) {
    const fields = toJs(v.fields);
    const encoded = hex(frames.encodeFrame({ t: v.type, ...fields }));
    expect(encoded === v.msgpack, `frames[${i}] ${v.type}: encoded ${encoded} != ${v.msgpack}`);
    const { t, sender, ...decoded } = frames.decodeFrame(fromHex(v.msgpack));
    expect(t === v.type && sender === v.sender, `frames[${i}]: type/sender ${t}/${sender}`);
    expect(same(decoded, fields), `frames[${i}] ${v.type}: decoded ${JSON.stringify(canon(decoded))}`);
    count("frames");
  }
  for (const [i, v] of vectors.decode.entries()) {
    try {
      const data = v.msgpack ? fromHex(v.msgpack) : bytes.concat([fromHex(v.msgpack_head), new Uint8Array(Number(v.zeros))]);
      const { t, sender, ...decoded } = frames.decodeFrame(data);
      expect(t === v.type && same(decoded, toJs(v.fields)), `decode[${i}] ${v.name}: ${JSON.stringify(canon(decoded))}`);
    } catch (exc) {
      failures.push(`decode[${i}] ${v.name}: refused (${exc.code}: ${exc.message})`);
    }
    count("decode");
  }

  // What a device must refuse, in the state the vector names.
  const hello = vectors.frames.find((f) => f.type === "hello").msgpack;
  const welcome = vectors.frames.find((f) => f.type === "welcome").msgpack;
  for (const [i, v] of vectors.rejections.entries()) {
    if (v.receiver !== "device") continue;
    const session = new DeviceSession();
    if (v.state !== "awaiting_hello") session.receive(fromHex(hello));
    if (v.state === "ready") session.receive(fromHex(welcome));
    let data;
    if ("msgpack" in v) data = fromHex(v.msgpack);
    else if ("msgpack_head" in v) data = bytes.concat([fromHex(v.msgpack_head), new Uint8Array(Number(v.zeros))]);
    else data = null;
    if (data === null) continue; // a text message: the connection refuses it before the session
    try {
      session.receive(data);
      failures.push(`rejections[${i}] ${v.name}: accepted`);
    } catch (exc) {
      expect(exc.code === v.code, `rejections[${i}] ${v.name}: ${exc.code} != ${v.code} (${exc.message})`);
      expect(exc.fatal === v.fatal, `rejections[${i}] ${v.name}: fatal ${exc.fatal} != ${v.fatal}`);
      if (v.fatal) expect(exc.closeCode === v.close_code, `rejections[${i}] ${v.name}: close ${exc.closeCode}`);
    }
    count("rejections.device");
  }

  for (const [i, v] of vectors.uris.valid.entries()) {
    try {
      const got = parseEnrollmentUri(v.uri);
      const want = { ...v.parsed, es: v.parsed.es === null ? null : fromHex(v.parsed.es) };
      expect(same(got, want), `uris.valid[${i}] ${v.name}: ${JSON.stringify(canon(got))}`);
    } catch (exc) {
      failures.push(`uris.valid[${i}] ${v.name}: refused: ${exc.message}`);
    }
    count("uris.valid");
  }
  for (const [i, v] of vectors.uris.invalid.entries()) {
    try {
      parseEnrollmentUri(v.uri);
      failures.push(`uris.invalid[${i}] ${v.name}: accepted`);
    } catch (exc) {
      expect(exc.code === v.code, `uris.invalid[${i}] ${v.name}: ${exc.code}`);
    }
    count("uris.invalid");
  }
  for (const [i, v] of vectors.purposes.entries()) {
    expect(isSetupTest(v.ctx) === v.setup_test, `purposes[${i}] ${v.name}`);
    expect(purposeOf(v.ctx) === v.purpose, `purposes[${i}] ${v.name}: purpose ${purposeOf(v.ctx)}`);
    count("purposes");
  }
  const codePoint = (ch) => (ch === null ? null : `U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
  for (const [i, v] of vectors.text.entries()) {
    const unsafe = codePoint(text.firstUnsafe(v.text));
    expect(unsafe === v.unsafe, `text[${i}] ${v.name}: first unsafe ${unsafe} != ${v.unsafe}`);
    expect(text.hasUnsafe(v.text) === (v.unsafe !== null), `text[${i}] ${v.name}: hasUnsafe`);
    const shown = text.printable(v.text);
    expect(shown === v.printable, `text[${i}] ${v.name}: printable ${JSON.stringify(shown)}`);
    count("text");
  }
  return { checked, failures };
}
