{{/*
The chart name, or nameOverride; 63 characters at most (a label value).
*/}}
{{- define "kfkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, else "<release>-<chart>", or just the release
name when it already contains the chart name.
*/}}
{{- define "kfkit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "kfkit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that identify the release's objects (stable across upgrades).
*/}}
{{- define "kfkit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kfkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object; each template adds app.kubernetes.io/component and app.kubernetes.io/version.
*/}}
{{- define "kfkit.labels" -}}
helm.sh/chart: {{ include "kfkit.chart" . }}
{{ include "kfkit.selectorLabels" . }}
app.kubernetes.io/part-of: kfkit
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Name of the ServiceAccount the predictor pods run as.
*/}}
{{- define "kfkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kfkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the ServingRuntime.
*/}}
{{- define "kfkit.runtimeName" -}}
{{- default (include "kfkit.fullname" .) .Values.servingRuntime.name }}
{{- end }}

{{/*
Name of the InferenceService (also the model name in /v1/models/<name> and /v2/models/<name>).
*/}}
{{- define "kfkit.isvcName" -}}
{{- default (include "kfkit.fullname" .) .Values.inferenceService.name }}
{{- end }}

{{/*
Model version label: inferenceService.modelVersion, else the last path segment of storageUri made into a
valid label value.
*/}}
{{- define "kfkit.modelVersion" -}}
{{- if .Values.inferenceService.modelVersion }}
{{- .Values.inferenceService.modelVersion }}
{{- else }}
{{- $last := .Values.inferenceService.storageUri | trimSuffix "/" | splitList "/" | last }}
{{- regexReplaceAll "[^A-Za-z0-9_.-]" $last "-" | trunc 63 | trimAll "-_." }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository@digest, else repository:tag (tag defaults to the appVersion).
*/}}
{{- define "kfkit.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Knative autoscaler class for the metric: the KPA implements concurrency and rps, the HPA cpu and memory.
*/}}
{{- define "kfkit.autoscalingClass" -}}
{{- if has .Values.inferenceService.autoscaling.metric (list "cpu" "memory") -}}
hpa.autoscaling.knative.dev
{{- else -}}
kpa.autoscaling.knative.dev
{{- end }}
{{- end }}
