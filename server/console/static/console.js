// The console's only script: ask before an action that signs people out.
// Loaded from the package (no inline script: the CSP forbids it).
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.getAttribute("data-confirm"))) {
    event.preventDefault();
  }
});
