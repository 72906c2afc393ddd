{{/*
The drift detector's container, shared by its Deployment and its Knative Service.
*/}}
{{- define "kfkit.driftContainer" -}}
{{- $d := .Values.drift }}
{{- $knative := eq $d.kind "KnativeService" }}
- name: drift
  image: {{ include "kfkit.imageRef" (dict "image" $d.image "default" .Chart.AppVersion) | quote }}
  {{- with .Values.image.pullPolicy }}
  imagePullPolicy: {{ . }}
  {{- end }}
  command: ["python", "-m", "kfkit.serving.drift"]
  args:
    - --model-uri={{ $d.modelUri }}
    - --host=0.0.0.0
    - --port={{ $d.port }}
    - --state-dir=/tmp/drift
    - --cache-dir=/tmp/cache
    {{- with include "kfkit.driftSink" . }}
    - --sink={{ . }}
    {{- end }}
    {{- if gt (int $d.settings.windowSize) 0 }}
    - --window-size={{ int64 $d.settings.windowSize }}
    {{- end }}
    {{- if ge (float64 $d.settings.windowSeconds) 0.0 }}
    - --window-seconds={{ $d.settings.windowSeconds }}
    {{- end }}
    {{- range $d.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: {{ ternary "http1" "http" $knative }}
      containerPort: {{ $d.port }}
      protocol: TCP
  env:
    - name: HOME
      value: /tmp
    - name: OMP_NUM_THREADS
      value: "1"
    {{- include "kfkit.s3Env" . | trim | nindent 4 }}
  # Ready once the detector is built from the version's reference data.
  readinessProbe:
    httpGet:
      path: /v2/health/ready
      {{- if not $knative }}
      port: http
      {{- end }}
  livenessProbe:
    httpGet:
      path: /v2/health/live
      {{- if not $knative }}
      port: http
      {{- end }}
    initialDelaySeconds: 30
    periodSeconds: 10
  resources:
    {{- toYaml $d.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
