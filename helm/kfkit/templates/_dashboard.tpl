{{/*
The dashboard JSON (templates/dashboard.yaml): one panel per signal, each query from _promql.tpl.
*/}}
{{- define "kfkit.dashboardJson" -}}
{{- $ := . -}}
{
  "uid": {{ printf "kfkit-%s" (include "kfkit.fullname" . | sha256sum | trunc 8) | toJson }},
  "title": {{ printf "kfkit: %s/%s" .Release.Namespace (include "kfkit.fullname" .) | toJson }},
  "tags": ["kfkit", "kserve", "drift"],
  "timezone": "browser",
  "schemaVersion": 39,
  "version": 1,
  "refresh": "30s",
  "time": {"from": "now-6h", "to": "now"},
  "templating": {"list": [
    {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
  ]},
  "panels": [
    {
      "id": 1, "type": "timeseries", "title": "Request rate",
      "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.requestRate" $ | toJson }}, "legendFormat": "{{`{{model}}`}}"}
      ]
    },
    {
      "id": 2, "type": "timeseries", "title": "Non-2xx responses by status",
      "gridPos": {"x": 12, "y": 0, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.statusRate" $ | toJson }}, "legendFormat": "{{`{{model}}`}} {{`{{status}}`}}"}
      ]
    },
    {
      "id": 3, "type": "timeseries", "title": "Server error ratio",
      "gridPos": {"x": 0, "y": 8, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.errorRatio" $ | toJson }}, "legendFormat": "{{`{{model}}`}}"}
      ]
    },
    {
      "id": 4, "type": "timeseries", "title": "Latency p50 / p99",
      "gridPos": {"x": 12, "y": 8, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.latencyQuantile" (list $ 0.5) | toJson }}, "legendFormat": "p50 {{`{{model}}`}}"},
        {"refId": "B", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.latencyQuantile" (list $ 0.99) | toJson }}, "legendFormat": "p99 {{`{{model}}`}}"}
      ]
    },
    {
      "id": 5, "type": "timeseries", "title": "Batch size (rows per forward pass) p50 / p99",
      "gridPos": {"x": 0, "y": 16, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.batchRows" (list $ 0.5) | toJson }}, "legendFormat": "p50 {{`{{model}}`}}"},
        {"refId": "B", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.batchRows" (list $ 0.99) | toJson }}, "legendFormat": "p99 {{`{{model}}`}}"}
      ]
    },
    {
      "id": 6, "type": "timeseries", "title": "Payload events by outcome",
      "gridPos": {"x": 12, "y": 16, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.payloadRate" $ | toJson }}, "legendFormat": "{{`{{model}}`}} {{`{{outcome}}`}}"}
      ]
    },
    {
      "id": 7, "type": "stat", "title": "Drift (last tested window)",
      "gridPos": {"x": 0, "y": 24, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.isDrift" $ | toJson }}, "legendFormat": "{{`{{job}}`}}"}
      ]
    },
    {
      "id": 8, "type": "timeseries", "title": "Drift p-value per feature",
      "gridPos": {"x": 12, "y": 24, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.pValue" $ | toJson }}, "legendFormat": "{{`{{feature}}`}}"}
      ]
    },
    {
      "id": 9, "type": "timeseries", "title": "PSI per feature",
      "gridPos": {"x": 0, "y": 32, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.psi" $ | toJson }}, "legendFormat": "{{`{{feature}}`}}"}
      ]
    },
    {
      "id": 10, "type": "timeseries", "title": "Rolling performance (once labels arrive) and floors",
      "gridPos": {"x": 12, "y": 32, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.performance" $ | toJson }}, "legendFormat": "{{`{{metric}}`}}"},
        {"refId": "B", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.performanceFloor" $ | toJson }}, "legendFormat": "floor {{`{{metric}}`}}"}
      ]
    },
    {
      "id": 11, "type": "timeseries", "title": "Drift windows by outcome",
      "gridPos": {"x": 0, "y": 40, "w": 12, "h": 8},
      "datasource": {"type": "prometheus", "uid": "${datasource}"},
      "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
      "targets": [
        {"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": {{ include "kfkit.promql.windowRate" $ | toJson }}, "legendFormat": "{{`{{outcome}}`}}"}
      ]
    }
  ]
}
{{- end }}
