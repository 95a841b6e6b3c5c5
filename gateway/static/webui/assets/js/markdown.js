// Markdown replies as DOM: the vendored marked lexer (vendor/marked.esm.js) parses, this file builds elements from
// its tokens with createElement/textContent only. No HTML string is ever parsed, so raw HTML in a reply shows as
// text, nothing can carry a script or an inline style (the CSP allows neither), and links go only to http(s) or
// mailto, in a new tab with rel="noopener noreferrer".
//
// While a reply streams, `MarkdownView` re-lexes only the tail: every block before the last two is final and never
// touched again, and renders are throttled to animation frames. So a long reply costs linear work and the blocks
// already shown are never rebuilt (no flicker, a selection in them survives).

import { Lexer } from "../vendor/marked.esm.js";

// What the renderer did, for the tests: characters lexed, block elements built, renders run.
export const stats = { lexed: 0, built: 0, renders: 0 };

const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0", copy: "©", reg: "®", hellip: "…", mdash: "—", ndash: "–" };

// marked keeps character references as written (an HTML renderer leaves them to the browser); as text they must be
// decoded here. Unknown names stay as typed.
function decode(text) {
  if (!text.includes("&")) return text;
  return text.replace(/&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|[a-z]{2,8});/gi, (whole, ref) => {
    if (ref[0] === "#") {
      const code = ref[1] === "x" || ref[1] === "X" ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : "\ufffd";
    }
    return ENTITIES[ref.toLowerCase()] ?? whole;
  });
}

function el(tag, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  return e;
}

export function safeHref(href) {
  const h = String(href || "").trim();
  return SAFE_URL.test(h) ? h : null;
}

function inline(tokens, parent) {
  for (const t of tokens || []) {
    switch (t.type) {
      case "strong":
      case "em":
      case "del": {
        const e = el(t.type === "strong" ? "strong" : t.type === "em" ? "em" : "del");
        inline(t.tokens, e);
        parent.append(e);
        break;
      }
      case "codespan": {
        const e = el("code");
        e.textContent = decode(t.text);
        parent.append(e);
        break;
      }
      case "br":
        parent.append(el("br"));
        break;
      case "link": {
        const href = safeHref(t.href);
        if (!href) {
          // Not a link we follow (javascript:, data:, a relative path): its text, and nothing to click.
          const e = el("span", "link-refused");
          inline(t.tokens, e);
          parent.append(e);
          break;
        }
        const a = el("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        if (t.title) a.title = decode(t.title);
        inline(t.tokens, a);
        parent.append(a);
        break;
      }
      case "image": {
        // Never loaded (the CSP allows only this origin's images, and a reply should not make the browser fetch):
        // a link to it, named by its alt text.
        const href = safeHref(t.href);
        const e = el(href ? "a" : "span", "image-link");
        if (href) {
          e.href = href;
          e.target = "_blank";
          e.rel = "noopener noreferrer";
        }
        e.textContent = `[image: ${decode(t.text || href || "")}]`;
        parent.append(e);
        break;
      }
      case "checkbox": {
        const box = el("input");
        box.type = "checkbox";
        box.disabled = true;
        box.checked = !!t.checked;
        parent.append(box, " ");
        break;
      }
      case "text":
        if (t.tokens) inline(t.tokens, parent);
        else parent.append(decode(t.text));
        break;
      case "escape":
        parent.append(t.text);
        break;
      default:
        // html (shown as typed), and anything a later marked adds: its source text, never markup.
        parent.append(t.raw || t.text || "");
    }
  }
}

function copyButton(code) {
  const b = el("button", "copy small");
  b.type = "button";
  b.textContent = "Copy";
  b.setAttribute("aria-label", "Copy the code");
  b.addEventListener("click", async () => {
    try {
      await copyText(code);
      b.textContent = "Copied";
    } catch {
      b.textContent = "Copy failed";
    }
  });
  return b;
}

// The Clipboard API exists only in a secure context (https, localhost); over plain http on a LAN the old
// selection-and-copy command still works.
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}

function block(t) {
  switch (t.type) {
    case "space":
    case "def":
      return null;
    case "paragraph": {
      const p = el("p");
      inline(t.tokens, p);
      return p;
    }
    case "heading": {
      const e = el(`h${Math.min(6, Math.max(1, t.depth))}`);
      inline(t.tokens, e);
      return e;
    }
    case "code": {
      const box = el("div", "code-block");
      const head = el("div", "code-head");
      const lang = el("span", "lang");
      lang.textContent = (t.lang || "").split(/\s/)[0];
      head.append(lang, copyButton(t.text));
      const pre = el("pre");
      const code = el("code");
      code.textContent = t.text;
      pre.append(code);
      box.append(head, pre);
      return box;
    }
    case "blockquote": {
      const q = el("blockquote");
      for (const c of t.tokens) {
        const n = block(c);
        if (n) q.append(n);
      }
      return q;
    }
    case "list": {
      const list = el(t.ordered ? "ol" : "ul");
      if (t.ordered && t.start !== "" && t.start !== 1) list.start = Number(t.start);
      for (const item of t.items) {
        const li = el("li", item.task ? "task" : "");
        for (const c of item.tokens) {
          // In a tight list an item's text is inline; in a loose one it is made of paragraphs.
          if (c.type === "text" || c.type === "checkbox") inline([c], li);
          else {
            const n = block(c);
            if (n) li.append(n);
          }
        }
        list.append(li);
      }
      return list;
    }
    case "table": {
      const wrap = el("div", "table-wrap");
      const table = el("table");
      const row = (cells, tag) => {
        const tr = el("tr");
        cells.forEach((c, i) => {
          const cell = el(tag, t.align[i] ? `align-${t.align[i]}` : "");
          inline(c.tokens, cell);
          tr.append(cell);
        });
        return tr;
      };
      const thead = el("thead");
      thead.append(row(t.header, "th"));
      const tbody = el("tbody");
      for (const r of t.rows) tbody.append(row(r, "td"));
      table.append(thead, tbody);
      wrap.append(table);
      return wrap;
    }
    case "hr":
      return el("hr");
    case "html": {
      const p = el("p", "raw-html");
      p.textContent = t.text;
      return p;
    }
    case "text": {
      const p = el("p");
      inline(t.tokens || [{ type: "text", text: t.text }], p);
      return p;
    }
    default: {
      const p = el("p");
      p.textContent = t.raw || "";
      return p;
    }
  }
}

function lex(text) {
  stats.lexed += text.length;
  return new Lexer({ gfm: true, breaks: false }).lex(text);
}

// The whole of `text` as a fragment (history, a finished reply).
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  for (const t of lex(text)) {
    const n = block(t);
    if (n) frag.append(n);
  }
  return frag;
}

// A token's identity for reuse: a block whose source is unchanged keeps its element.
const keyOf = (t) => `${t.type}\u0000${t.raw.replace(/\n+$/, "")}`;

// The text of one message, drawn into `root` and kept up to date as it grows. `set(text)` schedules a render on the
// next animation frame; `flush()` renders now and, once the reply is complete, re-lexes it whole so that what is
// left on screen is exactly what a fresh render of the full text gives (reusing every element that already is).
export class MarkdownView {
  constructor(root, { onRender } = {}) {
    this.root = root;
    this.text = "";
    this.base = 0; // characters of `text` whose blocks are final
    this.frozen = []; // [{key, node}] of those blocks, in order
    this.live = []; // [{key, node}] of the blocks after them
    this.frame = 0;
    this.onRender = onRender || ((mutate) => mutate());
  }

  set(text) {
    this.text = text;
    if (!this.frame) this.frame = requestAnimationFrame(() => this._render(false));
  }

  flush(final = true) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this._render(final);
  }

  _render(final) {
    this.frame = 0;
    stats.renders += 1;
    this.onRender(() => (final ? this._final() : this._tail()));
  }

  _tail() {
    const tail = this.text.slice(this.base);
    const tokens = lex(tail);
    this.live = this._reconcile(this.live, tokens, this._anchor());
    // Everything before the last two blocks is final: a later character can still turn the last block into
    // something else (a paragraph into a list item, a line into a table), and the one before it can still absorb
    // it (a list gains an item); nothing earlier changes. Sources that marked rewrites (CR LF) never commit.
    if (tokens.map((t) => t.raw).join("").length !== tail.length) return;
    const solid = [];
    tokens.forEach((t, i) => t.type !== "space" && solid.push(i));
    if (solid.length < 3) return;
    const cut = solid[solid.length - 2];
    for (let i = 0; i < cut; i++) this.base += tokens[i].raw.length;
    this.frozen.push(...this.live.slice(0, cut));
    this.live = this.live.slice(cut);
  }

  _final() {
    const all = this._reconcile([...this.frozen, ...this.live], lex(this.text), null);
    this.frozen = all;
    this.live = [];
    this.base = this.text.length;
  }

  // The first node after the frozen blocks (where the live ones start), or null when there are none yet.
  _anchor() {
    for (let i = this.frozen.length - 1; i >= 0; i--) if (this.frozen[i].node) return this.frozen[i].node;
    return null;
  }

  // Bring the entries `old` (drawn after `after`, or from the start when null) in line with `tokens`: an entry whose
  // source is unchanged at the same place keeps its element; the others are built and swapped in.
  _reconcile(old, tokens, after) {
    const next = [];
    let cursor = after;
    tokens.forEach((t, i) => {
      const key = keyOf(t);
      const prev = old[i];
      let node;
      if (prev && prev.key === key) node = prev.node;
      else {
        node = block(t);
        if (node) stats.built += 1;
        if (prev && prev.node) prev.node.remove();
      }
      if (node) {
        const want = cursor ? cursor.nextSibling : this.root.firstChild;
        if (want !== node) this.root.insertBefore(node, want);
        cursor = node;
      }
      next.push({ key, node });
    });
    for (const gone of old.slice(tokens.length)) if (gone.node) gone.node.remove();
    return next;
  }
}
