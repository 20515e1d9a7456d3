{{/* Chart name, possibly overridden. */}}
{{- define "commerce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: the release name when it already holds the chart name. */}}
{{- define "commerce.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "commerce.stubsName" -}}
{{- printf "%s-stubs" (include "commerce.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "commerce.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "commerce.labels" -}}
helm.sh/chart: {{ include "commerce.chart" . }}
app.kubernetes.io/name: {{ include "commerce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: commerce
{{- end -}}

{{/* Selector of the commerce server pods. */}}
{{- define "commerce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "commerce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{/* Selector of the stubs pods. */}}
{{- define "commerce.stubsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "commerce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: stubs
{{- end -}}

{{- define "commerce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "commerce.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "commerce.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the pods read: the user's existingSecret or the chart's own. */}}
{{- define "commerce.secretName" -}}
{{- default (include "commerce.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* "true" when no database is configured: the embedded SQLite demo. */}}
{{- define "commerce.embedded" -}}
{{- if and (not .Values.database.url) (not .Values.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* "true" when a JWT public key (PEM or JWKS) is configured. */}}
{{- define "commerce.hasPublicKey" -}}
{{- $k := .Values.auth.existingSecretKeys -}}
{{- if or .Values.auth.publicKey .Values.auth.jwks (and .Values.existingSecret (or $k.publicKey $k.jwks)) -}}true{{- end -}}
{{- end -}}

{{/*
The ENVIRONMENT value, after the guards: auto picks production only with a public key;
production needs verification keys, a database and real sibling services (or the stubs).
*/}}
{{- define "commerce.environment" -}}
{{- $env := .Values.environment -}}
{{- if not $env -}}
{{- $env = ternary "production" "development" (eq (include "commerce.hasPublicKey" .) "true") -}}
{{- end -}}
{{- if eq $env "production" -}}
{{- if and (not (include "commerce.hasPublicKey" .)) (not .Values.auth.jwtSecret) (not .Values.existingSecret) -}}
{{- fail "environment=production needs JWT verification keys: set auth.publicKey or auth.jwks (or auth.existingSecretKeys with existingSecret); the service refuses the development secret in production" -}}
{{- end -}}
{{- if and .Values.auth.jwtSecret (lt (len .Values.auth.jwtSecret) 32) -}}
{{- fail "environment=production refuses an auth.jwtSecret shorter than 32 bytes (prefer auth.publicKey or auth.jwks)" -}}
{{- end -}}
{{- if include "commerce.embedded" . -}}
{{- fail "environment=production needs PostgreSQL: set database.url or existingSecret (the embedded SQLite database is a demo)" -}}
{{- end -}}
{{- if and (not .Values.existingSecret) (not .Values.piiMasterKey) -}}
{{- fail "environment=production needs piiMasterKey (64 hex characters) or existingSecret with PII_MASTER_KEY" -}}
{{- end -}}
{{- if and (not .Values.stubs.enabled) (not .Values.siblings.paymentUrl) -}}
{{- fail "environment=production needs the sibling services: set siblings.paymentUrl, inventoryUrl and shippingUrl (or stubs.enabled for a demo)" -}}
{{- end -}}
{{- end -}}
{{- $env -}}
{{- end -}}

{{/* The three sibling URLs, or none (embedded stubs). */}}
{{- define "commerce.siblings" -}}
{{- if .Values.stubs.enabled -}}
{{- $url := printf "http://%s:%d" (include "commerce.stubsName" .) (int .Values.stubs.port) -}}
{{- dict "payment" $url "inventory" $url "shipping" $url | toJson -}}
{{- else -}}
{{- $s := .Values.siblings -}}
{{- if or $s.paymentUrl $s.inventoryUrl $s.shippingUrl -}}
{{- if not (and $s.paymentUrl $s.inventoryUrl $s.shippingUrl) -}}
{{- fail "siblings: set all three of paymentUrl, inventoryUrl and shippingUrl, or none (embedded stubs)" -}}
{{- end -}}
{{- dict "payment" $s.paymentUrl "inventory" $s.inventoryUrl "shipping" $s.shippingUrl | toJson -}}
{{- else -}}
{{- dict | toJson -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Variables from the Secret, by reference. With existingSecret only DATABASE_URL is required;
the chart's own Secret holds exactly what was given.
*/}}
{{- define "commerce.secretEnv" -}}
{{- $secret := include "commerce.secretName" . -}}
{{- $existing := .Values.existingSecret -}}
{{- $keys := list -}}
{{- if $existing -}}
{{- $keys = list "DATABASE_URL" "DATABASE_READ_URL" "REDIS_URL" "PII_MASTER_KEY" "JWT_SECRET" -}}
{{- else -}}
{{- if .Values.database.url }}{{ $keys = append $keys "DATABASE_URL" }}{{ end -}}
{{- if .Values.database.readUrl }}{{ $keys = append $keys "DATABASE_READ_URL" }}{{ end -}}
{{- if .Values.redis.url }}{{ $keys = append $keys "REDIS_URL" }}{{ end -}}
{{- if .Values.piiMasterKey }}{{ $keys = append $keys "PII_MASTER_KEY" }}{{ end -}}
{{- if .Values.auth.jwtSecret }}{{ $keys = append $keys "JWT_SECRET" }}{{ end -}}
{{- end -}}
{{- range $keys }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
      {{- if and $existing (ne . "DATABASE_URL") }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/* The security context of every container of the chart. */}}
{{- define "commerce.containerSecurityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}
