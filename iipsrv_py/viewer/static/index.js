/* The slide list of /: filter as one types. */
"use strict";
(function () {
  const input = document.getElementById("filter");
  const items = Array.from(document.querySelectorAll("#slides li"));
  input.addEventListener("input", () => {
    const text = input.value.trim().toLowerCase();
    for (const item of items) item.hidden = text !== "" && !item.textContent.toLowerCase().includes(text);
  });
})();
