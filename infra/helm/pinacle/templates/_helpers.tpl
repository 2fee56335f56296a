{{/* Names, labels and the checks shared by the templates. */}}

{{- define "pinacle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: RELEASE-pinacle, or RELEASE when the
release name already contains the chart name. Kept to 50 characters so that
suffixes such as "-migrate" fit in 63.
*/}}
{{- define "pinacle.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pinacle.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pinacle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pinacle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pinacle.labels" -}}
helm.sh/chart: {{ include "pinacle.chart" . }}
{{ include "pinacle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pinacle
{{- end }}

{{- define "pinacle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pinacle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: REPOSITORY:TAG, the tag defaulting to the chart's appVersion. */}}
{{- define "pinacle.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The API host name: ingress.apiHost, else the domain. */}}
{{- define "pinacle.apiHost" -}}
{{- default .Values.domain .Values.ingress.apiHost }}
{{- end }}

{{/* The public URL: publicUrl, else derived from the ingress (may be empty). */}}
{{- define "pinacle.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl }}
{{- else if .Values.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.ingress.tls.secretName "")) (include "pinacle.apiHost" .) }}
{{- end }}
{{- end }}

{{/* The API's in-cluster address, as agents dial it. */}}
{{- define "pinacle.serverUrl" -}}
{{- default (printf "http://%s-api.%s.svc:%d" (include "pinacle.fullname" .) .Release.Namespace (int .Values.api.service.port)) .Values.agent.serverUrl }}
{{- end }}

{{/*
Whether the chart creates its Secret: when any secret is given inline.
Renders "true" or nothing.
*/}}
{{- define "pinacle.createSecret" -}}
{{- if or (and (not .Values.database.existingSecret) .Values.database.url) (and (not .Values.redis.existingSecret) .Values.redis.url) (and (not .Values.masterKey.existingSecret) .Values.masterKey.value) (and (not .Values.adminToken.existingSecret) .Values.adminToken.value) -}}
true
{{- end }}
{{- end }}

{{/*
An env var from a secret reference: (dict "root" $ "env" NAME "ref" SECTION
"chartKey" KEY "inline" INLINE_FIELD). Uses SECTION.existingSecret/key, else
the chart's own Secret when the inline value is set; renders nothing when
neither is.
*/}}
{{- define "pinacle.secretEnv" -}}
{{- $ref := .ref }}
{{- if $ref.existingSecret }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret }}
      key: {{ $ref.key }}
{{- else if (get $ref .inline) }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "pinacle.fullname" .root }}
      key: {{ .chartKey }}
{{- end }}
{{- end }}

{{/*
Fails the render on values the schema cannot express: required secrets and
conflicting choices.
*/}}
{{- define "pinacle.validate" -}}
{{- if and (not .Values.database.existingSecret) (not .Values.database.url) }}
{{- fail "database: set database.existingSecret (a Secret holding a postgres:// URL) or database.url" }}
{{- end }}
{{- if and .Values.database.existingSecret .Values.database.url }}
{{- fail "database: set database.existingSecret or database.url, not both" }}
{{- end }}
{{- if and .Values.database.url (not (hasPrefix "postgres" .Values.database.url)) }}
{{- fail "database.url: must be a postgres:// or postgresql:// URL (replicas share the database)" }}
{{- end }}
{{- if and (not .Values.masterKey.existingSecret) (not .Values.masterKey.value) }}
{{- fail "masterKey: set masterKey.existingSecret or masterKey.value (base64 of 32 random bytes); every replica needs the same key" }}
{{- end }}
{{- range $name := list "redis" "masterKey" "adminToken" }}
{{- $ref := get $.Values $name }}
{{- if and $ref.existingSecret (or $ref.url $ref.value) }}
{{- fail (printf "%s: set %s.existingSecret or the inline value, not both" $name $name) }}
{{- end }}
{{- end }}
{{- if and .Values.agent.enabled (not .Values.agent.joinTokenSecret.name) }}
{{- fail "agent.joinTokenSecret.name: agents need a Secret holding a reusable join token (`pinacle host token`); or set agent.enabled=false" }}
{{- end }}
{{- if and (not .Values.ingress.enabled) (eq .Values.proxy.service.type "ClusterIP") }}
{{- fail "proxy.service.type: with the ingress disabled, pods are reachable only through a NodePort or LoadBalancer proxy Service" }}
{{- end }}
{{- end }}

{{/* Pod and container security contexts of the unprivileged API and migration pods. */}}
{{- define "pinacle.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.api.runAsUser }}
runAsGroup: {{ .Values.api.runAsUser }}
fsGroup: {{ .Values.api.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "pinacle.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}
