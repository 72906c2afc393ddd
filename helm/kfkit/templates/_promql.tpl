{{/*
The PromQL of the dashboard and the alerts, in one place. Series are selected by job and namespace: on a
cluster the PodMonitors below set job to "<fullname>-predictor" / "<fullname>-drift" and Prometheus adds
namespace; a plain scrape config must add the same two labels (tests/helm does). The status regex is
kfkit.deploy.promql.SERVER_ERROR_STATUSES: HTTP 5xx and their gRPC codes; a 4xx is the client's fault.
*/}}
{{- define "kfkit.promql.predictor" -}}
job="{{ include "kfkit.fullname" . }}-predictor",namespace="{{ .Release.Namespace }}"
{{- end }}
{{- define "kfkit.promql.drift" -}}
job="{{ include "kfkit.fullname" . }}-drift",namespace="{{ .Release.Namespace }}"
{{- end }}

{{- define "kfkit.promql.requestRate" -}}
sum by (namespace, model) (rate(kfkit_requests_total{ {{- include "kfkit.promql.predictor" . -}} }[{{ .Values.monitoring.rateWindow }}]))
{{- end }}

{{- define "kfkit.promql.statusRate" -}}
sum by (namespace, model, status) (rate(kfkit_requests_total{ {{- include "kfkit.promql.predictor" . -}} ,status!~"2.."}[{{ .Values.monitoring.rateWindow }}]))
{{- end }}

{{- define "kfkit.promql.errorRatio" -}}
{{- $all := include "kfkit.promql.requestRate" . -}}
(sum by (namespace, model) (rate(kfkit_requests_total{ {{- include "kfkit.promql.predictor" . -}} ,status=~"5..|INTERNAL|UNKNOWN|UNAVAILABLE|DATA_LOSS"}[{{ .Values.monitoring.rateWindow }}])) or 0 * {{ $all }}) / {{ $all }}
{{- end }}

{{- define "kfkit.promql.latencyQuantile" -}}
{{- $ := index . 0 -}}
histogram_quantile({{ index . 1 }}, sum by (namespace, model, le) (rate(kfkit_request_duration_seconds_bucket{ {{- include "kfkit.promql.predictor" $ -}} }[{{ $.Values.monitoring.rateWindow }}])))
{{- end }}

{{- define "kfkit.promql.batchRows" -}}
{{- $ := index . 0 -}}
histogram_quantile({{ index . 1 }}, sum by (namespace, model, le) (rate(kfkit_batch_rows_bucket{ {{- include "kfkit.promql.predictor" $ -}} }[{{ $.Values.monitoring.rateWindow }}])))
{{- end }}

{{- define "kfkit.promql.payloadDropped" -}}
sum by (namespace, model) (rate(kfkit_payload_log_events_total{ {{- include "kfkit.promql.predictor" . -}} ,outcome="dropped"}[{{ .Values.monitoring.rateWindow }}]))
{{- end }}

{{- define "kfkit.promql.payloadRate" -}}
sum by (namespace, model, outcome) (rate(kfkit_payload_log_events_total{ {{- include "kfkit.promql.predictor" . -}} }[{{ .Values.monitoring.rateWindow }}]))
{{- end }}

{{- define "kfkit.promql.isDrift" -}}
max by (namespace, job) (kfkit_drift_is_drift{ {{- include "kfkit.promql.drift" . -}} })
{{- end }}

{{- define "kfkit.promql.pValue" -}}
min by (namespace, job, feature) (kfkit_drift_p_val{ {{- include "kfkit.promql.drift" . -}} })
{{- end }}

{{- define "kfkit.promql.psi" -}}
max by (namespace, job, feature) (kfkit_drift_psi{ {{- include "kfkit.promql.drift" . -}} })
{{- end }}

{{- define "kfkit.promql.performance" -}}
min by (namespace, job, metric) (kfkit_drift_performance{ {{- include "kfkit.promql.drift" . -}} })
{{- end }}

{{- define "kfkit.promql.performanceFloor" -}}
min by (namespace, job, metric) (kfkit_drift_performance_floor{ {{- include "kfkit.promql.drift" . -}} })
{{- end }}

{{- define "kfkit.promql.windowRate" -}}
sum by (namespace, job, outcome) (rate(kfkit_drift_windows_total{ {{- include "kfkit.promql.drift" . -}} }[{{ .Values.monitoring.rateWindow }}]))
{{- end }}
