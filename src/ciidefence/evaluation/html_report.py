"""``report.html``: one self-contained page for a run (no network, no server): the summary's tables, its
figures, and a browser of every image's outcome under every attack and defence, with filters.

The page is written from the run folder alone (the database and the figures
:func:`~ciidefence.evaluation.summary.write_report` draws). Thumbnails of the
images are embedded where the run's data folder can still be read. A filter
can be set in the address (``report.html#defence=jpeg&outcome=lost``), so a
view can be linked to.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from ..files import write_atomically
from .gallery import Picture, picture_key
from .run_folder import read_run
from .store import ResultRow

THUMBNAIL_SIDE = 96
MAX_THUMBNAILS = 500


def write_html_report(run_dir: str | Path, summary_markdown: str, figures: list[Path],
                      pictures: list[Picture] | None = None) -> Path:
    """Write ``run_dir/report.html`` from the summary's Markdown, its figures and the run's rows; returns its path.

    ``summary_markdown`` is :func:`~ciidefence.evaluation.summary.write_report`'s ``summary.md``; its tables and
    headings become the page's, the rest its text. ``pictures`` (from
    :func:`~ciidefence.evaluation.gallery.remake_first_batch`) show the adversarial and defended images beside
    their outcomes.
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    pictures = pictures or []
    outcomes = _outcomes(run.rows, {picture.key for picture in pictures})
    thumbnails = _thumbnails(run.config, sorted({row.image for row in run.rows}))
    page = _PAGE.format(
        title=html.escape(f"ciidefence report: {run_dir.name}"),
        heading=html.escape(run_dir.name),
        body=markdown_to_html(summary_markdown),
        figures="\n".join(_figure(path) for path in figures if path.is_file()),
        pictures_note=html.escape(_pictures_note(pictures)),
        data=json.dumps({"outcomes": outcomes, "thumbnails": thumbnails,
                         "pictures": {p.key: [p.adversarial, p.defended] for p in pictures}}
                        ).replace("</", "<\\/"),
        script=_SCRIPT,
        style=_STYLE,
    )
    path = run_dir / "report.html"
    write_atomically(path, lambda handle: handle.write(page.encode()))
    return path


def _pictures_note(pictures: list[Picture]) -> str:
    if not pictures:
        return ("No pictures of attacked and defended images: `ciid report RUN --html --pictures` remakes the "
                "run's first batch to show them.")
    images = len({picture.image for picture in pictures})
    same = sum(picture.reproduced for picture in pictures)
    return (f"Pictures: the run's first {images} images, attacked and defended again as the run did them "
            f"(CIIDefence's inpainted boxes outlined); {same} of {len(pictures)} give the stored predictions"
            + ("." if same == len(pictures) else " (the others differ in the last digits of an iterative attack "
                                                   "or come from another machine: the pictures are then close to, "
                                                   "not exactly, what was scored)."))


def _outcomes(rows: list[ResultRow], pictured: set[str]) -> list[dict]:
    """One record per scored adversarial (or clean) image, defence and experiment: what the browser lists."""
    from ..models.base import imagenet_class_names

    names = imagenet_class_names()

    def name(index: int | None) -> str:
        return names[index] if index is not None and 0 <= index < len(names) else "-"

    found = []
    for row in rows:
        if row.purpose not in ("main", "sweep"):
            continue
        attack = "clean" if row.threat == "clean" else f"{row.attack} {row.eps_label} {row.threat}" + (
            f"-{row.approximation}" if row.approximation else "")
        outcome = "error" if row.error else "kept" if row.pred_defended_adv == row.label else "lost"
        key = picture_key(row.image, row.experiment, row.defence_hash)
        found.append({"image": row.image, "defence": row.defence, "attack": attack, "outcome": outcome,
                      "truth": name(row.label), "undefended": name(row.pred_adv),
                      "defended": name(row.pred_defended_adv), "error": row.error or "",
                      "pictured": "yes" if key in pictured else "no", "key": key})
    return found


def _thumbnails(config: dict | None, keys: list[str]) -> dict[str, str]:
    """Small JPEG data URIs of the run's images, where its data folder can be read; none where it cannot."""
    from PIL import Image

    from ..errors import CIIDefenceError
    from .data import load_dataset

    if not config or not Path(config.get("data", "")).is_dir():
        return {}
    try:
        items = {item.key: item for item in load_dataset(config["data"], config.get("labels"))}
    except CIIDefenceError:
        return {}
    found = {}
    for key in keys[:MAX_THUMBNAILS]:
        item = items.get(key)
        if item is None:
            continue
        try:
            with Image.open(item.path) as opened:
                thumbnail = opened.convert("RGB")
            thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            thumbnail.save(buffer, "JPEG", quality=80)
        except OSError:
            continue
        found[key] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    return found


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def markdown_to_html(text: str) -> str:
    """The summary's Markdown (headings, pipe tables, paragraphs, bold and code) as HTML; everything escaped."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            out.append(f"<h{level + 1}>{_inline(line.lstrip('#').strip())}</h{level + 1}>")
        elif line.startswith("|"):
            table = []
            while index < len(lines) and lines[index].startswith("|"):
                table.append(lines[index])
                index += 1
            out.append(_table(table))
            continue
        elif line.strip():
            paragraph = [line]
            while index + 1 < len(lines) and lines[index + 1].strip() and not lines[index + 1].startswith(("#", "|")):
                index += 1
                paragraph.append(lines[index])
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
        index += 1
    return "\n".join(out)


def _table(lines: list[str]) -> str:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    rows = [row for row in rows if not all(set(cell) <= {"-", ":"} and cell for cell in row)]
    if not rows:
        return ""
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in rows[1:])
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
code { overflow-wrap: anywhere; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 560px; border: 1px solid #ddd; }
#browser td.kept { background: #e6f4e6; } #browser td.lost { background: #fbe3e3; }
#browser td.error { background: #eee; }
#browser img { width: 64px; height: auto; } #browser img.picture { width: 120px; margin-right: 3px; }
#browser td.pictures { white-space: nowrap; }
.filters label { margin-right: 1em; }
"""

_SCRIPT = """
const DATA = JSON.parse(document.getElementById('report-data').textContent);
const FIELDS = ['defence', 'attack', 'outcome', 'pictured'];
function fill(select, values) {
  for (const value of ['all', ...values]) {
    const option = document.createElement('option'); option.value = value; option.textContent = value;
    select.appendChild(option);
  }
}
function current() {
  const chosen = {};
  for (const field of FIELDS) chosen[field] = document.getElementById('filter-' + field).value;
  return chosen;
}
function render() {
  const chosen = current();
  const body = document.querySelector('#browser tbody');
  body.textContent = '';
  const shown = DATA.outcomes.filter(o => FIELDS.every(f => chosen[f] === 'all' || o[f] === chosen[f]));
  for (const o of shown.slice(0, 2000)) {
    const row = body.insertRow();
    const picture = row.insertCell();
    if (DATA.thumbnails[o.image]) {
      const img = document.createElement('img'); img.alt = o.image;
      img.onload = () => img.setAttribute('data-loaded', 'yes');
      img.src = DATA.thumbnails[o.image]; picture.appendChild(img);
    }
    const pictures = row.insertCell(); pictures.className = 'pictures';
    for (const uri of DATA.pictures[o.key] || []) {
      const img = document.createElement('img'); img.className = 'picture'; img.alt = o.image;
      img.onload = () => img.setAttribute('data-loaded', 'yes');
      img.src = uri; pictures.appendChild(img);
    }
    for (const value of [o.image, o.defence, o.attack, o.truth, o.undefended, o.defended]) {
      row.insertCell().textContent = value;
    }
    const cell = row.insertCell();
    cell.textContent = o.outcome + (o.error ? ': ' + o.error : '');
    cell.className = o.outcome;
  }
  document.getElementById('shown').textContent = shown.length + ' of ' + DATA.outcomes.length + ' outcomes' +
    (shown.length > 2000 ? ' (first 2000 listed)' : '');
  const hash = FIELDS.filter(f => chosen[f] !== 'all').map(f => f + '=' + encodeURIComponent(chosen[f])).join('&');
  history.replaceState(null, '', hash ? '#' + hash : location.pathname);
}
for (const field of FIELDS) {
  const select = document.getElementById('filter-' + field);
  fill(select, [...new Set(DATA.outcomes.map(o => o[field]))].sort());
  select.addEventListener('change', render);
}
for (const part of location.hash.slice(1).split('&').filter(Boolean)) {
  const [key, value] = part.split('=');
  const select = document.getElementById('filter-' + key);
  if (select && [...select.options].some(o => o.value === decodeURIComponent(value))) {
    select.value = decodeURIComponent(value);
  }
}
render();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'">
<style>{style}</style></head>
<body>
<h1>{heading}</h1>
<nav><a href="#summary">Summary</a> · <a href="#figures">Figures</a> · <a href="#images">Images</a></nav>
<section id="summary">{body}</section>
<section id="figures"><h2>Figures</h2>{figures}</section>
<section id="images"><h2>Images</h2>
<p>Every image under every attack and defence of the run: the class the undefended and the defended classifier gave
(on the adversarial image; on the clean one for "clean"), and whether the defence kept the true class.</p>
<div class="filters">
<label>defence <select id="filter-defence"></select></label>
<label>attack <select id="filter-attack"></select></label>
<label>outcome <select id="filter-outcome"></select></label>
<label>pictures <select id="filter-pictured"></select></label>
<span id="shown"></span></div>
<p>{pictures_note}</p>
<table id="browser"><thead><tr><th></th><th>attacked, defended</th><th>image</th><th>defence</th><th>attack</th>
<th>true class</th><th>undefended</th><th>defended</th><th>outcome</th></tr></thead><tbody></tbody></table>
</section>
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body></html>
"""
