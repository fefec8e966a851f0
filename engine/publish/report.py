"""OUT/report.html: one self-contained page (no CDN, works offline) showing every derivative.

Per master, a contact sheet per channel: thumbnail (the file itself, lazily loaded from OUT),
size, format, bytes and status; failures highlighted with their error; filters by channel and
status; video outputs with a poster and a player. Above each sheet, the editor's loop
(publish/editor.py): the master's thumbnail with every output's crop region drawn on it, where
an editor sets focal points and crop boxes and saves the catalog's crops file.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

from ..rows import Row
from ..spec.models import Preset
from . import editor
from .feeds import VIDEO_FORMATS

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f6f4}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:12px 20px;z-index:1}
h1{font-size:20px;margin:0 0 6px}h2{font-size:16px;margin:0 0 8px}h3{font-size:13px;margin:8px 0 4px;
text-transform:uppercase;letter-spacing:.05em;color:#666}
main{padding:12px 20px}section.master{background:#fff;border:1px solid #ddd;border-radius:6px;
padding:12px;margin:0 0 14px}.sheet{display:flex;flex-wrap:wrap;gap:10px}
figure.card{margin:0;width:176px;border:1px solid #ddd;border-radius:4px;padding:6px;background:#fafafa}
figure.card img,figure.card video{width:164px;height:164px;object-fit:contain;background:
repeating-conic-gradient(#eee 0 25%,#fff 0 50%) 0 0/16px 16px;display:block}
figure.failed{border:2px solid #c62828;background:#fdecea}.error{color:#b71c1c;font-size:12px;
height:164px;overflow:auto;word-break:break-word}figcaption{font-size:12px;margin-top:4px}
.status-ok{color:#2e7d32}.status-skipped{color:#6d6d6d}.status-failed{color:#c62828;font-weight:600}.status-kept{color:#b26a00;font-weight:600}
.counts span{margin-right:12px}label{margin-right:14px}
"""

SCRIPT = """
(function(){
  const channel=document.getElementById('channel-filter');
  const status=document.getElementById('status-filter');
  const shown=document.getElementById('shown-count');
  function apply(){
    let visible=0;
    document.querySelectorAll('section.master').forEach(function(section){
      let inSection=0;
      section.querySelectorAll('div.channel').forEach(function(group){
        let inGroup=0;
        group.querySelectorAll('figure.card').forEach(function(card){
          const ok=(!channel.value||card.dataset.channel===channel.value)&&
                   (!status.value||card.dataset.status===status.value);
          card.hidden=!ok; if(ok){inGroup++;}
        });
        group.hidden=inGroup===0; inSection+=inGroup;
      });
      section.hidden=inSection===0; visible+=inSection;
    });
    shown.textContent=String(visible);
  }
  channel.addEventListener('change',apply); status.addEventListener('change',apply); apply();
})();
"""


STREAM_FORMATS = ("m3u8", "m4s")  # HLS files (video/hls.py)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def _media(row: Row, poster: str | None) -> str:
    src = escape(quote(row.path))
    label = escape(f"{row.master_id} {row.channel}/{row.output}")
    if row.format in VIDEO_FORMATS:
        poster_attr = f' poster="{escape(quote(poster))}"' if poster else ""
        return f'<video controls preload="none" src="{src}"{poster_attr} title="{label}"></video>'
    if row.format in STREAM_FORMATS:  # an HLS playlist or its fMP4: a link, not a picture
        return f'<a class="stream" href="{src}">{escape(row.format or "")}</a>'
    return f'<img src="{src}" loading="lazy" alt="{label}">'


def _card(row: Row, poster: str | None) -> str:
    status = row.status
    head = (_media(row, poster) if status != "failed" and row.path
            else f'<div class="error">{escape(row.error or "failed")}</div>')
    if status == "kept":  # failed tonight; the file shown is the last good one, still served
        head += (f'<div class="error">{escape(row.error or "failed")} (serving the file '
                 f'from run {escape(row.stale_since or "?")})</div>')
    facts = [escape(row.output or "(master)")]
    if status != "failed":
        facts += [f"{row.width}×{row.height}", escape(row.format or ""),
                  _size(row.bytes)]
        if row.quality is not None:
            facts.append(f"q{row.quality}")
    facts.append(f'<span class="status-{escape(status)}">{escape(status)}</span>')
    return (f'<figure class="card {escape(status)}" data-channel="{escape(row.channel or "")}"'
            f' data-status="{escape(status)}">{head}<figcaption>{" · ".join(facts)}'
            f"</figcaption></figure>")


@dataclass
class Totals:
    """What the whole manifest holds (the header's counts), whichever rows the page shows."""

    rows: int = 0
    masters: int = 0
    statuses: Counter = field(default_factory=Counter)
    channels: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, rows: list[Row]) -> Totals:
        return cls(len(rows), len({r.master_id for r in rows}), Counter(r.status for r in rows),
                   sorted({r.channel for r in rows if r.channel}),
                   sorted({r.run_id for r in rows if r.run_id}))


def render_report(rows: list[Row], title: str = "fanout report",
                  sidecar: editor.Sidecar | None = None,
                  presets: dict[str, Preset] | None = None, totals: Totals | None = None,
                  note: str | None = None) -> str:
    """The page. `sidecar`: the catalog's crops file the editor starts from (none: the page
    saves only what is chosen on it); `presets`: the configuration OUT was made with, which
    says each output's fit and size even where its row failed; `totals`: the whole manifest's
    counts when `rows` are a selection of it, which `note` explains."""
    sidecar = sidecar or editor.Sidecar()
    totals = totals or Totals.of(rows)
    editable = []
    counts, channels, runs = totals.statuses, totals.channels, totals.runs
    by_master: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_master[r.master_id].append(r)
    sections = []
    for master_id in sorted(by_master):
        mrows = by_master[master_id]
        first = mrows[0]
        posters = [r.path for r in mrows if r.status != "failed" and r.path
                   and r.format not in VIDEO_FORMATS + STREAM_FORMATS]
        poster = posters[0] if posters else None
        groups = defaultdict(list)
        for r in mrows:
            groups[r.channel or ""].append(r)
        body = "".join(
            f'<div class="channel" data-channel="{escape(ch)}"><h3>{escape(ch or "master")}</h3>'
            f'<div class="sheet">{"".join(_card(r, poster) for r in group)}</div></div>'
            for ch, group in sorted(groups.items())
        )
        meta = " · ".join(escape(str(v)) for v in (first.master_kind or "unknown",
                                                    first.role, first.product,
                                                    f"position {first.position}"))
        thumb = editor.master_thumbnail(first.master_path, first.master_kind)
        editable.append(editor.master_data(master_id, mrows, thumb, sidecar, presets or {}))
        sections.append(f'<section class="master" data-master="{escape(master_id)}"><h2>'
                        f"{escape(master_id)} <small>{meta}</small></h2>"
                        f"{editor.editor_html(master_id, thumb)}{body}</section>")
    options = "".join(f'<option value="{escape(c)}">{escape(c)}</option>' for c in channels)
    statuses = "".join(f'<option value="{s}">{s}</option>'
                       for s in ("ok", "skipped", "kept", "failed"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{escape(title)}</title><link rel="icon" href="data:,"><style>{STYLE}{editor.STYLE}</style>
</head>
<body><header><h1>{escape(title)}</h1>
<p class="counts">{escape(", ".join(runs) or "no run")}:
<span><b id="total-count">{totals.rows}</b> derivatives</span>
<span><b id="master-count">{totals.masters}</b> masters</span>
<span class="status-ok"><b id="ok-count">{counts.get("ok", 0)}</b> ok</span>
<span class="status-skipped"><b id="skipped-count">{counts.get("skipped", 0)}</b> skipped</span>
<span class="status-kept"><b id="kept-count">{counts.get("kept", 0)}</b> kept (failed, last good
file served)</span>
<span class="status-failed"><b id="failed-count">{counts.get("failed", 0)}</b> failed</span></p>
<label>Channel <select id="channel-filter"><option value="">all</option>{options}</select></label>
<label>Status <select id="status-filter"><option value="">all</option>{statuses}</select></label>
<span>showing <b id="shown-count">{len(rows)}</b></span>{editor.save_bar(sidecar)}
{f'<p class="note" id="selection-note">{escape(note)}</p>' if note else ""}</header>
<main>{"".join(sections)}</main>{editor.editor_json(editable, sidecar)}
<script>{SCRIPT}</script><script>{editor.SCRIPT}</script></body></html>
"""
