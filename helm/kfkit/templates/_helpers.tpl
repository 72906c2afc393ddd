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
Container image reference of kfkit's main image: repository@digest, else repository:tag (tag defaults to the
appVersion).
*/}}
{{- define "kfkit.image" -}}
{{- include "kfkit.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) }}
{{- end }}

{{/*
Any image reference; call with (dict "image" <repository/tag/digest> "default" <tag when empty>).
A digest wins over the tag, so an image can be pinned.
*/}}
{{- define "kfkit.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
{{- end }}
{{- end }}

{{/*
Labels of one component's objects; call with (list $ "drift-detector").
*/}}
{{- define "kfkit.componentLabels" -}}
{{- $ := index . 0 }}
{{- include "kfkit.labels" $ }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
{{- end }}

{{/*
Selector labels of one component's pods; call with (list $ "drift-detector").
*/}}
{{- define "kfkit.componentSelector" -}}
{{- include "kfkit.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Names of the chart's own services. */}}
{{- define "kfkit.driftName" -}}{{ include "kfkit.fullname" . | trunc 57 | trimSuffix "-" }}-drift{{- end }}
{{- define "kfkit.retrainName" -}}{{ include "kfkit.fullname" . | trunc 55 | trimSuffix "-" }}-retrain{{- end }}
{{- define "kfkit.feastName" -}}{{ include "kfkit.fullname" . | trunc 57 | trimSuffix "-" }}-feast{{- end }}
{{- define "kfkit.redisName" -}}{{ include "kfkit.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end }}
{{- define "kfkit.s3Name" -}}{{ include "kfkit.fullname" . | trunc 60 | trimSuffix "-" }}-s3{{- end }}
{{- define "kfkit.brokerName" -}}{{ default (include "kfkit.fullname" .) .Values.eventing.brokerName }}{{- end }}

{{/* In-cluster URLs. */}}
{{- define "kfkit.brokerUrl" -}}
http://{{ .Values.eventing.ingressHost }}/{{ .Release.Namespace }}/{{ include "kfkit.brokerName" . }}
{{- end }}
{{- define "kfkit.driftUrl" -}}
{{- if eq .Values.drift.kind "KnativeService" -}}
http://{{ include "kfkit.driftName" . }}.{{ .Release.Namespace }}.svc.cluster.local
{{- else -}}
http://{{ include "kfkit.driftName" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.drift.port }}
{{- end }}
{{- end }}
{{- define "kfkit.retrainUrl" -}}
http://{{ include "kfkit.retrainName" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.retrain.port }}
{{- end }}

{{/*
Where the predictor's payload events go: inferenceService.payloadLog.url, else the Broker, else the detector.
*/}}
{{- define "kfkit.payloadLogUrl" -}}
{{- if .Values.inferenceService.payloadLog.url }}{{ .Values.inferenceService.payloadLog.url }}
{{- else if .Values.eventing.enabled }}{{ include "kfkit.brokerUrl" . }}
{{- else if .Values.drift.enabled }}{{ include "kfkit.driftUrl" . }}
{{- end }}
{{- end }}

{{/*
Where the detector's drift events go: drift.sink, else the Broker, else the retrain trigger, else nowhere.
*/}}
{{- define "kfkit.driftSink" -}}
{{- if .Values.drift.sink }}{{ .Values.drift.sink }}
{{- else if .Values.eventing.enabled }}{{ include "kfkit.brokerUrl" . }}
{{- else if .Values.retrain.enabled }}{{ include "kfkit.retrainUrl" . }}
{{- end }}
{{- end }}

{{/*
The S3 endpoint: storage.s3.endpoint, else the bundled store's Service, else empty (AWS).
*/}}
{{- define "kfkit.s3Endpoint" -}}
{{- if .Values.storage.s3.endpoint }}{{ .Values.storage.s3.endpoint }}
{{- else if .Values.storage.bundled.enabled -}}
http://{{ include "kfkit.s3Name" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.storage.bundled.port }}
{{- end }}
{{- end }}

{{/*
Fail with a clear message when a component that reads S3 has no credentials Secret; call with (list $ "drift").
*/}}
{{- define "kfkit.requireS3Secret" -}}
{{- $ := index . 0 }}
{{- $s3 := $.Values.storage.s3 }}
{{- if not (or $s3.existingSecret $s3.useIrsa) }}
{{- fail (printf "%s.enabled=true needs S3 credentials: set storage.s3.existingSecret to the name of an existing Secret with keys %s and %s (kubectl create secret generic kfkit-s3 --from-literal=%s=... --from-literal=%s=...), or storage.s3.useIrsa=true" (index . 1) $s3.accessKeyIdKey $s3.secretAccessKeyKey $s3.accessKeyIdKey $s3.secretAccessKeyKey) }}
{{- end }}
{{- end }}

{{/*
S3 environment variables of a container that reads the registry (the MinIO SDK reads AWS_* only).
*/}}
{{- define "kfkit.s3Env" -}}
{{- $s3 := .Values.storage.s3 }}
{{- with include "kfkit.s3Endpoint" . }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/*
Pod-level settings every Deployment of the chart shares: service account, no token, pull secrets, pod
securityContext.
*/}}
{{- define "kfkit.podCommon" -}}
serviceAccountName: {{ include "kfkit.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
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

{{/*
checkov findings the chart accepts, with the reason, as checkov.io/skip<n> annotations; call with
(list $ "CKV_K8S_43" ...). The image checks are only skipped while an image is referenced by tag.
*/}}
{{- define "kfkit.checkovSkips" -}}
{{- $ := index . 0 }}
{{- $reasons := dict
  "CKV_K8S_43" "image by tag: the digest of the user's build is not known in advance; set image.digest (and the other images' digest) to pin it"
  "CKV_K8S_15" "imagePullPolicy left to the default: Always re-pulls on every start and stalls a scale from zero when the registry is down; a digest is immutable anyway"
  "CKV_K8S_40" "UID 1000 is the image's USER (Dockerfile); no privilege escalation, no capabilities and RuntimeDefault seccomp already guard a container escape"
  "CKV_K8S_29" "pod-level securityContext: a ServingRuntime has no such field and Knative drops it unless its podspec-securitycontext flag is on; the container has the same settings"
  "CKV_K8S_38" "service account token: a ServingRuntime cannot say; the InferenceService's ServiceAccount sets automountServiceAccountToken: false"
  "CKV_K8S_35" "secrets as environment variables: the MinIO SDK and KServe's storage initializer read the S3 credentials from AWS_* variables only"
  "CKV2_K8S_6" "NetworkPolicy: predictor pods are reached through the cluster's ingress or Knative activator, and the helm test pod takes no connections; those peers are per cluster"
  "CKV_K8S_8" "liveness probe: the helm test pod is one curl call that exits; there is nothing to probe"
  "CKV_K8S_9" "readiness probe: the helm test pod is one curl call that exits; there is nothing to probe"
}}
{{- range $i, $check := slice . 1 }}
checkov.io/skip{{ add1 $i }}: {{ printf "%s=%s" $check (get $reasons $check) | quote }}
{{- end }}
{{- end }}

{{/*
The image checks to skip for one image: none when it is pinned by digest; call with an image dict.
*/}}
{{- define "kfkit.imageSkips" -}}
{{- if not .digest }}CKV_K8S_43 CKV_K8S_15{{ end }}
{{- end }}
