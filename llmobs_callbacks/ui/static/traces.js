// The trace page's feedback form: 👍/👎 + comment → POST /api/feedback as JSON (with htmx's
// HX-Request header, which a cross-site form cannot send: the cookie login's CSRF guard), then
// the scores section reloads from the store (htmx, on the "llmobs:feedback" event).
(function () {
  "use strict";
  // The trace list's filter form: empty fields stay out of the request, so the URL htmx pushes
  // names only the filters in use (/traces?prompt_version=v1, not ?since=&until=&…).
  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.closest || !elt.closest("form.filters")) return;
    var params = event.detail.parameters;
    var keys = typeof params.keys === "function" ? Array.from(params.keys()) : Object.keys(params);
    keys.forEach(function (key) {
      var value = typeof params.get === "function" ? params.get(key) : params[key];
      if (value === "" || value === null) {
        if (typeof params.delete === "function") params.delete(key); else delete params[key];
      }
    });
  });
  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }
  ready(function () {
    var form = document.getElementById("feedback-form");
    if (!form) return;
    var result = form.querySelector(".feedback-result");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = event.submitter;
      var score = button && button.value !== undefined ? Number(button.value) : 1;
      var body = { trace_id: form.dataset.traceId, score: score };
      var comment = form.elements.comment.value.trim();
      var user = form.elements.user_id.value.trim();
      if (comment) body.comment = comment;
      if (user) body.user_id = user;
      result.textContent = "sending…";
      fetch(form.dataset.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "HX-Request": "true" },
        body: JSON.stringify(body)
      }).then(function (response) {
        return response.json().then(function (data) { return { status: response.status, data: data }; });
      }).then(function (r) {
        if (r.status === 201 || r.status === 202) {
          result.textContent = "thanks: feedback stored (" + (score >= 0.5 ? "👍 good" : "👎 bad") + ")";
          form.elements.comment.value = "";
          document.body.dispatchEvent(new CustomEvent("llmobs:feedback"));
        } else {
          result.textContent = "not stored: " + (r.data && r.data.error ? r.data.error : r.status);
        }
      }).catch(function (err) {
        result.textContent = "not stored: " + err;
      });
    });
  });
})();
