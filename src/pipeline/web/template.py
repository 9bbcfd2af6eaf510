"""The monitoring page's Jinja2 template (autoescaped), kept in Python so every install carries it."""

from __future__ import annotations

from datetime import date, datetime

from jinja2 import Environment, StrictUndefined


def _num(value: float | None, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}%"


def _when(value: datetime | date | None) -> str:
    if value is None:
        return "–"
    return f"{value:%Y-%m-%d %H:%M}" if isinstance(value, datetime) else f"{value:%Y-%m-%d}"


def _site(value: str) -> str:
    return "all sites (*)" if value == "*" else value


_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(num=_num, pct=_pct, when=_when, site=_site)

_SOURCE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Monitoring{% if o.selected %}: {{ o.selected }}{% endif %} · {{ o.registry.model_name }}</title>
<style>
:root { --fg:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff; --accent:#017cee;
        --crit:#c81e1e; --warn:#b45309; --ok:#047857; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#fff; border-bottom:1px solid var(--line); padding:14px 24px; }
header h1 { margin:0; font-size:20px; }
header p { margin:4px 0 0; color:var(--muted); font-size:12.5px; }
main { padding:16px 24px 32px; max-width:1400px; }
nav.sites { margin:12px 0 0; display:flex; flex-wrap:wrap; gap:6px; }
nav.sites a { padding:3px 10px; border:1px solid var(--line); border-radius:14px; text-decoration:none;
              color:var(--fg); background:#fff; font-size:12.5px; }
nav.sites a.on { background:var(--accent); border-color:var(--accent); color:#fff; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(180px, 1fr)); gap:12px; margin:0 0 16px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.tile .k { color:var(--muted); font-size:12px; } .tile .v { font-size:22px; font-weight:600; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 16px;
          margin:0 0 16px; }
section h2 { margin:0 0 8px; font-size:16px; } h3 { margin:0 0 6px; font-size:15px; }
.grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(560px, 1fr)); gap:16px; }
.site { border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.site .facts { color:var(--muted); font-size:12.5px; margin:0 0 8px; }
table { border-collapse:collapse; width:100%; font-size:12.5px; }
th, td { border-bottom:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:600; background:#fafbfc; }
td.n, th.n { text-align:right; font-variant-numeric: tabular-nums; } td.t { white-space:nowrap; }
.badge { display:inline-block; padding:0 7px; border-radius:10px; font-size:11.5px; font-weight:600;
         border:1px solid currentColor; white-space:nowrap; }
.critical, .failed { color:var(--crit); } .warning { color:var(--warn); } .passed { color:var(--ok); }
.pending, .muted { color:var(--muted); }
.alias { background:#e6f2fe; color:#0b4f8a; border-color:#b3d7fb; }
.notice { border-left:4px solid var(--warn); background:#fff8eb; padding:8px 12px; margin:4px 0 8px; }
.empty { color:var(--muted); font-style:italic; margin:4px 0; }
img { max-width:100%; height:auto; display:block; margin:6px 0; }
code { font-size:12px; } footer { color:var(--muted); font-size:12px; padding:0 24px 24px; }
footer a, td a { color:var(--accent); }
</style>
</head>
<body>
<header>
  <h1>Monitoring · {{ o.registry.model_name }}{% if o.selected %} · {{ o.selected }}{% endif %}</h1>
  <p>
    {% if period %}Period {{ period.label }}, up to the newest monitored window{% else %}No monitoring run has written metrics yet{% endif %}
    · store {{ o.store }} · generated {{ o.generated_at | when }} UTC
  </p>
  <nav class="sites" aria-label="sites">
    <a href="./" class="{{ 'on' if not o.selected else '' }}">all sites</a>
    {% for s in o.sites %}
    <a href="./?site={{ s.site | urlencode }}" class="{{ 'on' if o.selected == s.site else '' }}">{{ s.site }}{% if s.open_alerts %} ({{ s.open_alerts }}){% endif %}</a>
    {% endfor %}
  </nav>
</header>
<main>
<div class="tiles">
  <div class="tile"><div class="k">sites</div><div class="v">{{ o.sites | length }}</div></div>
  <div class="tile"><div class="k">open alerts</div><div class="v {{ 'critical' if critical else '' }}">{{ o.alerts | length }}{% if critical %} <span class="badge critical">{{ critical }} critical</span>{% endif %}</div></div>
  <div class="tile"><div class="k">studies waiting for a label</div><div class="v">{{ waiting }}</div></div>
  <div class="tile"><div class="k">champion</div><div class="v">{% if champion %}v{{ champion.version }} <span class="badge {{ champion.validation_status }}">{{ champion.validation_status }}</span>{% else %}<span class="muted">–</span>{% endif %}</div></div>
</div>

<section id="alerts">
  <h2>Open alerts</h2>
  {% if o.alerts %}
  <table>
    <tr><th>severity</th><th>kind</th><th>site</th><th>feature</th><th>statistic</th><th class="n">value</th><th class="n">threshold</th><th>since</th><th>last seen</th><th>what</th></tr>
    {% for a in o.alerts %}
    <tr class="alert" data-site="{{ a.site }}" data-feature="{{ a.feature }}">
      <td><span class="badge {{ a.severity }}">{{ a.severity }}</span></td><td>{{ a.kind }}</td><td>{{ a.site | site }}</td>
      <td><b>{{ a.feature }}</b></td><td>{{ a.statistic }}</td><td class="n">{{ a.value | num('.4g') }}</td><td class="n">{{ a.threshold | num('.4g') }}</td>
      <td class="t">{{ a.first_seen | when }}</td><td class="t">{{ a.last_seen | when }}</td><td>{{ a.message }}</td>
    </tr>
    {% endfor %}
  </table>
  {% else %}<p class="empty">No open alert.</p>{% endif %}
</section>

<section id="headline">
  <h2>Headline metric: share of studies filtered as normal</h2>
  {% if headline %}<img alt="Share of studies filtered as normal over time" src="data:image/png;base64,{{ headline }}">
  {% else %}<p class="empty">No monitored window in the period.</p>{% endif %}
</section>

<section id="sites">
  <h2>Per site</h2>
  <div class="grid">
  {% for s in sites %}
  {% set v = s.view %}
  <div class="site" id="site-{{ v.summary.site }}">
    <h3>{{ v.summary.site }}</h3>
    <p class="facts">
      newest window ends {{ v.summary.latest_window_end | when }} · {{ v.summary.volume | num('.0f') }} studies ·
      filtered as normal {{ v.summary.share_filtered_normal | pct }} · {{ v.summary.open_alerts }} open alert(s) ·
      {{ v.summary.waiting_for_label }} waiting for a label
    </p>
    {% if v.alerts %}
    <table>
      <tr><th>severity</th><th>kind</th><th>feature</th><th>since</th><th>what</th></tr>
      {% for a in v.alerts %}
      <tr><td><span class="badge {{ a.severity }}">{{ a.severity }}</span></td><td>{{ a.kind }}</td><td><b>{{ a.feature }}</b></td><td class="t">{{ a.first_seen | when }}</td><td>{{ a.message }}</td></tr>
      {% endfor %}
    </table>
    {% endif %}
    {% if s.headline %}<img alt="Headline metric at {{ v.summary.site }}" src="data:image/png;base64,{{ s.headline }}">{% endif %}
    {% if s.heatmap %}<img alt="Drift heatmap at {{ v.summary.site }}" class="heatmap" src="data:image/png;base64,{{ s.heatmap }}">
    {% else %}<p class="empty">No drift score stored for this site in the period (too few studies or no reference yet).</p>{% endif %}
  </div>
  {% endfor %}
  </div>
</section>

<section id="relabel-queue">
  <h2>Relabel queue</h2>
  {% if queue.rows %}
  <table>
    <tr><th>site</th>{% for st in queue.statuses %}<th class="n">{{ st }}</th>{% endfor %}<th class="n">waiting</th><th>oldest waiting pick</th><th>waiting, by why picked</th></tr>
    {% for r in queue.rows %}
    <tr><td>{{ r.site }}</td>{% for st in queue.statuses %}<td class="n">{{ r.by_status[st] }}</td>{% endfor %}<td class="n"><b>{{ r.waiting }}</b></td><td>{{ r.oldest | when }}</td><td>{{ r.strategies }}</td></tr>
    {% endfor %}
  </table>
  {% else %}<p class="empty">Nothing picked for labeling yet.</p>{% endif %}
</section>

<section id="models">
  <h2>Model versions and validation verdicts{% if o.selected %} <span class="muted">(the same for every site)</span>{% endif %}</h2>
  {% if o.registry.notice %}<p class="notice">{{ o.registry.notice }}</p>{% endif %}
  {% if o.registry.versions %}
  <table>
    <tr><th>version</th><th>aliases</th><th>verdict</th><th class="n">validated threshold</th><th>validated against</th><th>failed checks</th><th>approved by</th><th>registered</th><th>report</th></tr>
    {% for m in o.registry.versions %}
    <tr class="model-version">
      <td><b>v{{ m.version }}</b></td>
      <td>{% for a in m.aliases %}<span class="badge alias">{{ a }}</span> {% endfor %}</td>
      <td><span class="badge {{ m.validation_status }}">{{ m.validation_status }}</span></td>
      <td class="n">{{ m.validation_threshold | num('.4f') }}</td>
      <td>{{ ('v' ~ m.validated_against) if m.validated_against else '–' }}</td>
      <td>{{ m.failed_checks | join(', ') or '–' }}</td>
      <td>{{ m.approved_by or '–' }}</td>
      <td>{{ m.created_at | when }}</td>
      <td>{% if m.validation_report %}<code>{{ m.validation_report }}</code>{% else %}–{% endif %}</td>
    </tr>
    {% endfor %}
  </table>
  {% endif %}
  <h3 style="margin-top:12px">Audit trail</h3>
  {% if o.events %}
  <table>
    <tr><th>when (UTC)</th><th>version</th><th>action</th><th>who</th><th>detail</th></tr>
    {% for e in o.events %}
    <tr><td class="t">{{ e.at | when }}</td><td>v{{ e.version }}</td><td>{{ e.action }}</td><td>{{ e.actor }}</td>
      <td>{% for k, val in e.detail.items() %}{{ k }}: {{ val }}{% if not loop.last %}; {% endif %}{% endfor %}</td></tr>
    {% endfor %}
  </table>
  {% else %}<p class="empty">No validation, approval or promotion recorded in the store yet.</p>{% endif %}
</section>
</main>
<footer>
  JSON: <a href="api/sites">api/sites</a> · <a href="api/alerts">api/alerts</a> · <a href="api/headline">api/headline</a> ·
  <a href="api/drift">api/drift</a> · <a href="api/relabel-queue">api/relabel-queue</a> · <a href="api/models">api/models</a>
  (each but api/models, which is the same for every site, takes <code>?site=</code>; sites, headline and drift
  take <code>?days=</code>).
  Built from the store and the registry; every figure comes from a monitoring, selection or validation run.
</footer>
</body>
</html>
"""

PAGE = _ENV.from_string(_SOURCE)
