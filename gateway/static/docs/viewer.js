// A small OpenAPI viewer shipped with the gateway (no CDN): lists operations by tag with their schemas.
"use strict";
(async function () {
  const root = document.getElementById("ops");
  let spec;
  try {
    spec = await (await fetch("/openapi.json")).json();
  } catch (err) {
    root.textContent = "Cannot load /openapi.json: " + err;
    return;
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  const resolve = (s, depth) => {
    if (!s || depth > 6) return s;
    if (s.$ref) return resolve(schemas[s.$ref.split("/").pop()], depth + 1);
    const out = Array.isArray(s) ? [] : {};
    for (const [k, v] of Object.entries(s)) out[k] = typeof v === "object" && v !== null ? resolve(v, depth + 1) : v;
    return out;
  };
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  };
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags && op.tags[0]) || "other";
      (byTag[tag] = byTag[tag] || []).push([method.toUpperCase(), path, op]);
    }
  }
  root.textContent = "";
  for (const tag of Object.keys(byTag).sort()) {
    root.appendChild(el("h2", tag));
    for (const [method, path, op] of byTag[tag]) {
      const d = el("details");
      const s = el("summary");
      s.appendChild(el("span", method, "m " + method));
      s.appendChild(el("code", path));
      s.appendChild(document.createTextNode(" — " + (op.summary || "")));
      d.appendChild(s);
      if (op.parameters) {
        d.appendChild(el("h4", "Parameters"));
        d.appendChild(el("pre", op.parameters.map((p) => `${p.in} ${p.name}${p.required ? " (required)" : ""}`).join("\n")));
      }
      if (op.requestBody) {
        d.appendChild(el("h4", "Body"));
        d.appendChild(el("pre", JSON.stringify(resolve(op.requestBody.content, 0), null, 2)));
      }
      d.appendChild(el("h4", "Responses"));
      const lines = Object.entries(op.responses).map(([code, r]) => `${code} ${r.description}`);
      d.appendChild(el("pre", lines.join("\n")));
      const ok = Object.entries(op.responses).find(([code]) => code.startsWith("2"));
      if (ok && ok[1].content) d.appendChild(el("pre", JSON.stringify(resolve(ok[1].content, 0), null, 2)));
      root.appendChild(d);
    }
  }
})();
