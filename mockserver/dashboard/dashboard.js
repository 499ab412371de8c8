// The sandbox dashboard: polls /_mock/panels and swaps in the panels that changed;
// adds and removes fault rules; keeps the admin token (?token=) for this tab only.
(() => {
  "use strict";
  const KEY = "astria-mock-admin-token";
  const body = document.body;
  const poll = Number(body.dataset.poll) || 1000;
  const live = document.getElementById("live");
  const last = {};
  let timer = null;

  // ?token= goes into sessionStorage and out of the address bar (and its history).
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(KEY, params.get("token"));
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }

  class Locked extends Error {}

  async function call(method, url, payload) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(KEY);
    if (token) headers["X-Admin-Token"] = token;
    const init = { method, headers, cache: "no-cache" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(url, init);
    if (response.status === 401 && body.dataset.guarded === "true") {
      throw new Locked(token ? "That token was refused." : "");
    }
    return response;
  }

  function lock(message) {
    body.dataset.locked = "true";
    document.getElementById("locked").hidden = false;
    const error = document.getElementById("locked-error");
    error.textContent = message;
    error.hidden = !message;
    setLive("off", "locked");
  }

  function setLive(state, text) {
    live.className = "live " + state;
    live.textContent = text;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await call("GET", "/_mock/panels");
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      for (const [id, html] of Object.entries(data.panels)) {
        const element = document.getElementById(id);
        if (element && last[id] !== html && element.innerHTML !== html) element.innerHTML = html;
        last[id] = html;
      }
      if (body.dataset.locked === "true") {
        body.dataset.locked = "false";
        document.getElementById("locked").hidden = true;
      }
      setLive("on", "live · " + new Date().toLocaleTimeString());
    } catch (error) {
      if (error instanceof Locked) {
        lock(error.message);
        return; // no polling until a token is given
      }
      setLive("off", "offline: " + error.message);
    }
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    if (!document.hidden) timer = setTimeout(refresh, poll);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      setLive("", "paused");
    } else if (body.dataset.locked !== "true") {
      refresh();
    }
  });

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, event.target.elements.token.value);
    event.target.reset();
    refresh();
  });

  // Fault rules: the form becomes the rule JSON that POST /_mock/faults takes.
  const faultForm = document.getElementById("fault-form");
  const faultMessage = document.getElementById("fault-message");

  function say(text, bad) {
    faultMessage.textContent = text;
    faultMessage.className = "message" + (bad ? " bad" : "");
  }

  function ruleFrom(form) {
    const f = form.elements;
    const rule = { path: f.path.value.trim() };
    if (f.method.value) rule.method = f.method.value;
    if (f.status.value) rule.status = Number(f.status.value);
    const latency = f.latency_ms.value.trim();
    if (latency) {
      const range = latency.split(/\s*[-–,]\s*/).map(Number);
      rule.latency_ms = range.length === 1 ? range[0] : range;
    }
    if (f.times.value) rule.times = Number(f.times.value);
    if (f.probability.value) rule.probability = Number(f.probability.value);
    if (f.drop.checked) rule.drop = true;
    if (f.truncate.checked) rule.truncate = true;
    if (f.body.value.trim()) rule.body = JSON.parse(f.body.value);
    return rule;
  }

  async function act(action) {
    try {
      await action();
    } catch (error) {
      if (error instanceof Locked) lock(error.message);
      else say(error.message, true);
    }
  }

  faultForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      let rule;
      try {
        rule = ruleFrom(faultForm);
      } catch (error) {
        throw new Error("Body fields: " + error.message);
      }
      const response = await call("POST", "/_mock/faults", rule);
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || "HTTP " + response.status);
      say("Rule #" + answer.id + " added.", false);
      await refresh();
    });
  });

  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-remove-fault], [data-clear]");
    if (!target) return;
    act(async () => {
      const url = target.dataset.removeFault
        ? "/_mock/faults/" + encodeURIComponent(target.dataset.removeFault)
        : "/_mock/" + target.dataset.clear;
      const response = await call("DELETE", url);
      if (!response.ok) throw new Error((await response.json()).error || "HTTP " + response.status);
      if (target.dataset.removeFault) say("Rule #" + target.dataset.removeFault + " removed.", false);
      await refresh();
    });
  });

  if (body.dataset.locked === "true" && !sessionStorage.getItem(KEY)) lock("");
  else refresh();
})();
