"""A self-contained static HTML viewer of evaluated trajectories.

One file, no network: each trajectory shows its data set, workflow, labels, the verdict and the reward, then
every message as the model saw it (the question image, each turn's text, search results with their
thumbnails). Images are downscaled, stored once each as JPEG data URLs in a script block, and put in place by
the page's script, so a question image seen by three workflows is stored once. All text is HTML-escaped.

Filters (correct / searched / label / workflow / data set) run in the page; they can also be preset in the
address, e.g. ``viewer.html#correct=0&searched=1&label=search_required``. After the page loads, ``<body>``
carries ``data-images-loaded`` (images decoded) and ``data-shown`` (trajectories visible), which is what the
headless-browser test reads.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.trajectory import ImageRef

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.trajectory import Trajectory


@dataclass
class ViewerEntry:
    """A trajectory and its evaluation verdict."""

    trajectory: "Trajectory"
    correct: bool


class _ImageStore:
    """Downscaled JPEG data URLs keyed by content hash, each stored once."""

    def __init__(self, max_px: int):
        self.max_px = max_px
        self.urls: dict[str, str] = {}

    def add(self, image: "Image.Image") -> str:
        small = image.convert("RGB")
        small.thumbnail((self.max_px, self.max_px))
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=85)
        payload = buffer.getvalue()
        key = hashlib.sha256(payload).hexdigest()[:16]
        self.urls.setdefault(key, "data:image/jpeg;base64," + base64.b64encode(payload).decode("ascii"))
        return key


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _message_html(role: str, content: Sequence, image_keys: list[str]) -> str:
    parts = []
    for part in content:
        if isinstance(part, ImageRef):
            key = image_keys[part.index] if 0 <= part.index < len(image_keys) else None
            kind = "question" if part.index == 0 else "ctx"
            parts.append(f'<img class="{kind}" data-img="{key}" alt="image {part.index}">' if key else f'<span class="missing">[image {part.index} missing]</span>')
        else:
            parts.append(f"<span>{_e(part)}</span>")
    return f'<div class="msg {_e(role)}"><div class="role">{_e(role)}</div><div class="body">{"".join(parts)}</div></div>'


def _entry_html(entry: ViewerEntry, store: _ImageStore) -> str:
    t = entry.trajectory
    meta = t.meta or {}
    keys = [store.add(img) for img in t.images]
    labels = [str(meta[k]) for k in ("category", "search_need") if meta.get(k)]
    searched = t.image_searches + t.text_searches > 0
    reward = t.reward
    reward_text = (f"reward {reward.reward:.3f} (accuracy {reward.accuracy:g}, format {reward.format:g}, penalty {reward.penalty:g})"
                   if reward is not None else "reward –")
    attrs = (f'data-correct="{int(entry.correct)}" data-searched="{int(searched)}" data-labels="{_e(" ".join(labels))}" '
             f'data-workflow="{_e(meta.get("workflow", ""))}" data-dataset="{_e(meta.get("dataset", ""))}"')
    verdict = '<b class="ok">correct</b>' if entry.correct else '<b class="bad">wrong</b>'
    summary = (f'<div class="summary">{verdict} · answer: <code>{_e(t.final_answer if t.final_answer is not None else "(none)")}</code>'
               f' · gold: <code>{_e(" | ".join(t.gold_answers))}</code> · {reward_text}'
               f' · image searches {t.image_searches}, text searches {t.text_searches}, tool failures {t.tool_failures}'
               f' · end: {_e(t.end_reason)}</div>')
    title = (f'<h2>{_e(meta.get("dataset", ""))} · {_e(meta.get("workflow", ""))} · {_e(t.sample_id)}'
             + "".join(f' <span class="label">{_e(lb)}</span>' for lb in labels) + "</h2>")
    messages = "".join(_message_html(m.role, m.content, keys) for m in t.messages)
    return f'<article class="traj" {attrs}>{title}{summary}{messages}</article>'


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;display:flex;gap:14px;flex-wrap:wrap;align-items:center;z-index:1}
main{padding:12px 16px;max-width:1100px}
.traj{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0 0 14px;padding:10px 14px}
.traj h2{font-size:15px;margin:0 0 6px}.label{font-size:11px;background:#eef;border-radius:3px;padding:1px 5px;margin-left:4px}
.summary{font-size:13px;margin-bottom:8px}.ok{color:#170}.bad{color:#b10}
.msg{border-left:3px solid #ccc;margin:6px 0;padding:4px 10px}.msg.assistant{border-color:#36c;background:#f4f7ff}
.msg.user{border-color:#999}.msg.system{border-color:#ddd;color:#666}
.role{font-size:11px;text-transform:uppercase;color:#888}.body{white-space:pre-wrap;font-size:13px}
img.ctx{max-height:96px;vertical-align:middle;margin:2px 4px;border:1px solid #ccc}
img.question{max-height:200px;display:block;margin:4px 0;border:1px solid #ccc}
"""

_SCRIPT = """
const IMAGES = JSON.parse(document.getElementById('images').textContent);
const filters = ['correct', 'searched', 'label', 'workflow', 'dataset'];
function apply() {
  const want = Object.fromEntries(filters.map(f => [f, document.getElementById('f-' + f).value]));
  let shown = 0;
  for (const el of document.querySelectorAll('article.traj')) {
    const ok = (want.correct === '' || el.dataset.correct === want.correct)
      && (want.searched === '' || el.dataset.searched === want.searched)
      && (want.label === '' || el.dataset.labels.split(' ').includes(want.label))
      && (want.workflow === '' || el.dataset.workflow === want.workflow)
      && (want.dataset === '' || el.dataset.dataset === want.dataset);
    el.style.display = ok ? '' : 'none';
    if (ok) shown += 1;
  }
  document.getElementById('count').textContent = shown + ' of ' + document.querySelectorAll('article.traj').length + ' shown';
  document.body.dataset.shown = shown;
}
for (const img of document.querySelectorAll('img[data-img]')) img.src = IMAGES[img.dataset.img];
const preset = new URLSearchParams(location.hash.slice(1));
for (const f of filters) {
  const select = document.getElementById('f-' + f);
  if (preset.has(f)) select.value = preset.get(f);
  select.addEventListener('change', apply);
}
apply();
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img[data-img]')];
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesTotal = imgs.length;
});
"""


def _select(name: str, title: str, options: list[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{_e(v)}">{_e(label)}</option>' for v, label in [("", "all")] + options)
    return f'<label>{_e(title)} <select id="f-{name}">{opts}</select></label>'


def render_viewer(entries: Sequence[ViewerEntry], *, title: str = "mmsearch-r1 trajectories", max_px: int = 192) -> str:
    """The viewer page for ``entries`` as one HTML string."""
    store = _ImageStore(max_px)
    articles = "\n".join(_entry_html(e, store) for e in entries)
    metas = [e.trajectory.meta or {} for e in entries]
    labels = sorted({str(m[k]) for m in metas for k in ("category", "search_need") if m.get(k)})
    workflows = list(dict.fromkeys(str(m.get("workflow", "")) for m in metas if m.get("workflow")))
    datasets = list(dict.fromkeys(str(m.get("dataset", "")) for m in metas if m.get("dataset")))
    header = "".join([
        _select("correct", "answer", [("1", "correct"), ("0", "wrong")]),
        _select("searched", "searched", [("1", "yes"), ("0", "no")]),
        _select("label", "label", [(lb, lb) for lb in labels]),
        _select("workflow", "workflow", [(w, w) for w in workflows]),
        _select("dataset", "data", [(d, d) for d in datasets]),
        '<span id="count"></span>',
    ])
    images = json.dumps(store.urls).replace("</", "<\\/")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body><header><b>{_e(title)}</b>{header}</header>\n<main>\n{articles}\n</main>\n"
            f'<script type="application/json" id="images">{images}</script>\n<script>{_SCRIPT}</script>\n</body></html>\n')


def write_viewer(entries: Sequence[ViewerEntry], path: str | Path, **kwargs) -> Path:
    path = Path(path)
    path.write_text(render_viewer(entries, **kwargs), encoding="utf-8")
    return path
