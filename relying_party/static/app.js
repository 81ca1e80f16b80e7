// Live updates for the push request and setup pages, the countdowns, and "Copy".
// Progressive enhancement: every page works without this file (the buttons post forms).
"use strict";

// The status box is a live region: every write is read out. The stream says "Waiting"
// when it opens (the page says so already) and again every poll, which had a screen
// reader repeat "Waiting for you to approve the request in the app." at load and every
// 20 s; only a change is written.
function setStatus(box, data) {
  const same = box.dataset.status === data.status
    && box.querySelector(".status-label").textContent === data.label
    && box.querySelector(".status-message").textContent === data.message;
  if (same) return;
  box.className = "status status-" + data.tone;
  box.dataset.status = data.status;
  box.querySelector(".status-label").textContent = data.label;
  box.querySelector(".status-message").textContent = data.message;
}

// The countdown is not read out every second (a live region would say it 180 times); with
// `warning`, a live region, a screen reader hears the time left once, when it gets short
// (as the web authenticator says it for the same request).
const WARN_S = 20;

function countdown(element, seconds, onEnd, warning) {
  const end = Date.now() + seconds * 1000;
  let warned = false;
  function tick() {
    const left = Math.max(0, Math.round((end - Date.now()) / 1000));
    element.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
    if (warning && !warned && left > 0 && left <= WARN_S) {
      warned = true;
      warning.textContent = left + " seconds left.";
    }
    if (left === 0) {
      if (onEnd) onEnd();
      return false;
    }
    return true;
  }
  if (!tick()) return () => {};
  const timer = setInterval(() => { if (!tick()) clearInterval(timer); }, 1000);
  return () => clearInterval(timer);
}

function followPush(card) {
  const box = document.getElementById("push-status");
  const form = document.getElementById("complete-form");
  const number = document.getElementById("push-number");
  const count = document.getElementById("countdown");
  document.querySelectorAll(".js-hide").forEach((el) => el.classList.add("hidden"));
  if (card.dataset.final === "true") {
    // Approved while the page was away (a reload asks the service): finish, checked again there.
    if (box.dataset.status === "approved") form.submit();
    return;
  }
  const stop = countdown(document.getElementById("countdown-value"), Number(card.dataset.remaining), null,
                         document.getElementById("countdown-warning"));
  const events = new EventSource(card.dataset.events);
  // The stream broke (a flaky network, the site restarting): the browser tries again by
  // itself, and the page says so meanwhile, not "Waiting" as if all were well. The
  // stream's first event when it is back says how things stand.
  events.addEventListener("error", () => {
    if (events.readyState === EventSource.CLOSED) return;
    setStatus(box, { tone: "error", status: "unavailable", label: "Connection problem",
                     message: "This page lost its connection to the site. Still trying." });
  });
  events.addEventListener("status", (message) => {
    const data = JSON.parse(message.data);
    setStatus(box, data);
    if (!data.final) return;
    // The title follows the step: switching back to this tab, or a screen reader's
    // "say title", tells how the request ended, not "Approve sign-in request".
    document.title = data.label + " · " + document.title;
    events.close();
    stop();
    count.classList.add("hidden");
    // "15 seconds left." stayed in its live region after the end, read by a screen reader
    // next to "Expired" or "Denied".
    document.getElementById("countdown-warning").textContent = "";
    if (data.status === "approved") {
      form.submit();  // the server checks the signed answer again before signing in
    } else {
      number.classList.add("number-ended");
      const label = number.querySelector(".number-label");
      label.textContent = label.dataset.ended;
      const code = document.getElementById("use-code");
      if (data.next === "code" && code) {
        // Reported (or push paused): the code is the way on, "Send again" would be refused.
        document.getElementById("send-again-form").classList.add("hidden");
        code.classList.replace("secondary", "primary");
        code.focus();
      } else {
        const again = document.getElementById("send-again");
        again.classList.replace("secondary", "primary");
        again.focus();
      }
    }
  });
}

function followSetup(card) {
  const box = document.getElementById("setup-status");
  const form = document.getElementById("continue-form");
  countdown(document.getElementById("countdown-value"), Number(card.dataset.remaining));
  const events = new EventSource(card.dataset.events);
  events.addEventListener("setup", (message) => {
    const data = JSON.parse(message.data);
    if (data.status === "completed") {
      events.close();
      setStatus(box, { tone: "success", status: "completed", label: "Device connected",
                       message: "Sending a test notification to your device." });
      form.submit();
    } else if (data.status === "expired") {
      events.close();
      setStatus(box, { tone: "error", status: "expired", label: "Expired",
                       message: "This QR code expired. Cancel and start again." });
    } else if (data.status === "unverified") {
      // The key the service reported is not the one this device bound to the QR code:
      // nothing was added. The page itself says so and offers a new start.
      events.close();
      setStatus(box, { tone: "error", status: "unverified", label: "Not verified",
                       message: "This setup could not be verified. Start again." });
      window.location.reload();
    } else if (data.status === "at_device_cap") {
      // A device used the link while the account had as many devices as allowed: nothing
      // was added. The QR code stays: it works again once a device is removed.
      setStatus(box, { tone: "error", status: "at_device_cap", label: "Too many devices",
                       message: data.message });
    } else if (data.status === "unavailable") {
      setStatus(box, { tone: "error", status: "unavailable", label: "Connection problem",
                       message: "The sign-in service cannot be reached. Still trying." });
    }
  });
}

function copyButtons() {
  document.querySelectorAll("[data-copy]").forEach((button) => {
    // A button's new words ("Copied") are not read out by screen readers: a status
    // beside it says what happened.
    const said = document.createElement("span");
    said.className = "visually-hidden";
    said.setAttribute("role", "status");
    button.after(said);
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
        said.textContent = "Copied.";
      } catch {
        button.textContent = "Press Ctrl+C";
        said.textContent = "Not copied: the text is selected, press Ctrl+C to copy it.";
      }
      setTimeout(() => { button.textContent = "Copy"; said.textContent = ""; }, 2500);
    });
  });
}

// One submission per form until its page comes back: on a slow network a second click or
// Enter on "Verify" sent the form again, the first answer signed in (and renewed the form
// token) and the browser showed the second's refusal, "This form was not accepted...",
// on a sign-in that had worked. The button says it is working (aria-disabled, not
// disabled: it keeps the focus and its place in the Tab order).
function oneSubmitEach() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.sending) {
      event.preventDefault();
      return;
    }
    form.dataset.sending = "1";
    form.setAttribute("aria-busy", "true");
    const button = event.submitter || form.querySelector("[type=submit]");
    if (button) {
      button.setAttribute("aria-disabled", "true");
      button.classList.add("sending");
    }
  });
  const release = () =>
    document.querySelectorAll("form[data-sending]").forEach((form) => {
      delete form.dataset.sending;
      form.removeAttribute("aria-busy");
      form.querySelectorAll(".sending").forEach((b) => {
        b.removeAttribute("aria-disabled");
        b.classList.remove("sending");
      });
    });
  // Back to a page kept in the browser's memory: its forms can be sent again.
  window.addEventListener("pageshow", (event) => event.persisted && release());
  // The submission stopped (Esc, the stop button) before an answer came: the page stays,
  // and must not stay stuck with a form that can never be sent again.
  if (window.navigation) window.navigation.addEventListener("navigateerror", release);
}

oneSubmitEach();

document.addEventListener("DOMContentLoaded", () => {
  const push = document.getElementById("push");
  if (push) followPush(push);
  const setup = document.getElementById("setup");
  // Only a setup still waiting for its device is followed (an ended one has no stream).
  if (setup && setup.dataset.events) followSetup(setup);
  copyButtons();
});
