// Callout console: announces the browser's own validation messages next to each field and in
// a summary, and puts the focus on the error summary. Every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
  var form = document.getElementById("action-form");
  if (!form) { return; }
  form.addEventListener("invalid", function (event) {
    var field = event.target;
    if (!field.id) { return; }
    var id = field.id + "-error";
    var message = document.getElementById(id);
    if (!message) {
      message = document.createElement("p");
      message.id = id;
      message.className = "field-error";
      message.setAttribute("role", "alert");
      field.insertAdjacentElement("afterend", message);
    }
    message.textContent = field.validationMessage;
    field.setAttribute("aria-invalid", "true");
    field.setAttribute("aria-describedby", id);
  }, true);
  form.addEventListener("input", function (event) {
    var field = event.target;
    if (field.getAttribute("aria-invalid") === "true" && field.validity && field.validity.valid) {
      field.removeAttribute("aria-invalid");
      var message = document.getElementById(field.id + "-error");
      if (message) { message.textContent = ""; }
    }
  });
});
