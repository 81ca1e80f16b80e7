// The broker's clock as this phone estimates it (docs/protocol.md section 13): an
// answer's `ts`, a request's time left and its expiry. No I/O here.
//
// The estimate is carried from the broker's last `hello` on performance.now(), which no
// setting of the phone's clock moves: before, it was Date.now() plus the offset measured
// at hello, so a clock stepped while connected (the user setting the time, NTP or the
// carrier correcting it) moved it by the step, and the app signed answers that far off
// the broker's clock, which the service refused as stale while the app said "Approved".
// But performance.now() may stand still while the phone sleeps (browsers differ), and
// Date.now() counts a sleep. While the two have moved alike since the hello, neither was
// stepped and nothing slept uncounted; once they part by more than DOUBT_MS, one of them
// is wrong and which cannot be told (a step, or a sleep): the estimate is `doubtful`, and
// nothing is signed on it before a fresh `hello` (connection.js reconnects for one; no
// other frame tells the broker's time now).

// NTP slews both clocks alike, by far less; a doubt costs only a reconnect, and an
// answer's `ts` off by this much is well within the 120 s an RP allows.
export const DOUBT_MS = 2000;

export class BrokerClock {
  // `wall` and `steady`: Date.now and performance.now (given, so that a test can drive them).
  constructor(wall = () => Date.now(), steady = () => performance.now()) {
    this.wall = wall;
    this.steady = steady;
    this.set(wall()); // until a hello: this phone's clock
  }

  // The broker said its time (`hello.time`, ms) now.
  set(brokerTime) {
    this.brokerAt = brokerTime;
    this.wallAt = this.wall();
    this.steadyAt = this.steady();
  }

  now() {
    return Math.floor(this.brokerAt + (this.steady() - this.steadyAt));
  }

  // The broker's clock minus this phone's, now (a step of this phone's clock counts).
  offset() {
    return this.now() - this.wall();
  }

  // This phone's clock was stepped, or it slept uncounted, since the broker said its time.
  doubtful() {
    return Math.abs(this.wall() - this.wallAt - (this.steady() - this.steadyAt)) > DOUBT_MS;
  }
}
