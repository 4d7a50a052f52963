{{/* ---------------------------------------------------------------------------
Names
--------------------------------------------------------------------------- */}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "tasks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release name alone when it already contains
the chart name; fullnameOverride wins. Truncated to leave room for suffixes. */}}
{{- define "tasks.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The admin listener's Service: <fullname>-admin. */}}
{{- define "tasks.adminServiceName" -}}
{{- printf "%s-admin" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tasks.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.postgresql.headlessName" -}}
{{- printf "%s-postgresql-hl" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.testName" -}}
{{- printf "%s-test" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tasks.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Labels. Selector labels are only name + instance (+ component, which tells the
app from the database); they never change across upgrades.
--------------------------------------------------------------------------- */}}

{{- define "tasks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tasks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tasks.labels" -}}
helm.sh/chart: {{ include "tasks.chart" . }}
{{ include "tasks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "tasks.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels and selector of one component: (dict "ctx" $ "component" "backend") */}}
{{- define "tasks.componentLabels" -}}
{{ include "tasks.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tasks.componentSelectorLabels" -}}
{{ include "tasks.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Common metadata: name, namespace, labels, annotations.
(dict "ctx" $ "name" NAME "component" COMPONENT "annotations" MAP "labels" MAP) */}}
{{- define "tasks.metadata" -}}
name: {{ .name }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "tasks.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 2 }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := merge (dict) (.annotations | default dict) .ctx.Values.commonAnnotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Images: registry/repository:tag@digest; the digest wins at pull time.
--------------------------------------------------------------------------- */}}
{{- define "tasks.imageRef" -}}
{{- $img := .image -}}
{{- if and $img.requireDigest (not $img.digest) -}}
{{- fail (printf "%s.requireDigest: this environment deploys by digest only (a tag can be moved, a digest cannot); pass the digest of the pushed image, e.g. --set %s.digest=sha256:<64 hex digits> (the image workflow prints it)" .path .path) -}}
{{- end -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}{{- $repo = printf "%s/%s" $img.registry $img.repository -}}{{- end -}}
{{- $tag := $img.tag | default .default | toString -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $repo $tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "tasks.image" -}}
{{- include "tasks.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion "path" "image") -}}
{{- end -}}

{{- define "tasks.postgresql.image" -}}
{{- include "tasks.imageRef" (dict "image" .Values.postgresql.image "default" "17" "path" "postgresql.image") -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Database connection, from the in-chart PostgreSQL or externalDatabase.
--------------------------------------------------------------------------- */}}
{{- define "tasks.database.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "tasks.postgresql.fullname" . -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.port" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.service.port -}}
{{- else -}}
{{- .Values.externalDatabase.port -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.name" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.auth.database -}}
{{- else -}}
{{- .Values.externalDatabase.name -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.user" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.auth.username -}}
{{- else -}}
{{- .Values.externalDatabase.user -}}
{{- end -}}
{{- end -}}

{{/* The in-chart server has no TLS configured; its traffic stays inside the
namespace (and, with the NetworkPolicy on, between app and database only). */}}
{{- define "tasks.database.sslmode" -}}
{{- if .Values.postgresql.enabled -}}
disable
{{- else -}}
{{- .Values.externalDatabase.sslmode -}}
{{- end -}}
{{- end -}}

{{/* Values object holding the credential settings of the active database. */}}
{{- define "tasks.database.authPrefix" -}}
{{- if .Values.postgresql.enabled -}}postgresql.auth{{- else -}}externalDatabase{{- end -}}
{{- end -}}

{{- define "tasks.database.auth" -}}
{{- if .Values.postgresql.enabled -}}
{{- toYaml .Values.postgresql.auth -}}
{{- else -}}
{{- toYaml .Values.externalDatabase -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when the chart renders the credentials Secret itself. */}}
{{- define "tasks.database.createSecret" -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- if and (not $auth.existingSecret) $auth.password -}}true{{- end -}}
{{- end -}}

{{- define "tasks.database.secretName" -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- if $auth.existingSecret -}}
{{- $auth.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "tasks.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.secretKey" -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- $auth.passwordKey | default "password" -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Shutdown: one source of truth. The env vars and the grace period both come from
config.shutdown; the kubelet waits drain + timeout + margin before SIGKILL.
--------------------------------------------------------------------------- */}}
{{- define "tasks.terminationGracePeriodSeconds" -}}
{{- $s := .Values.config.shutdown -}}
{{- add (include "tasks.int" $s.drainDelaySecs) (include "tasks.int" $s.timeoutSecs) (include "tasks.int" $s.graceMarginSecs) -}}
{{- end -}}

{{/* A number as an integer string: values may arrive as float64 (printed as 1e+06
for large numbers) or, with Helm 3, as json.Number (a non-empty string is "true"
in an `if`). Never test or print a numeric value without it. */}}
{{- define "tasks.int" -}}
{{- . | toString | float64 | int64 -}}
{{- end -}}

{{/* Replicas the PDB has to live with: the HPA minimum or replicaCount. */}}
{{- define "tasks.minReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- include "tasks.int" .Values.autoscaling.minReplicas -}}
{{- else -}}
{{- include "tasks.int" .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{/* Port of the OTLP endpoint URL (explicit port, else 443 for https, else the
protocol's default: 4317 for grpc, 4318 for http/protobuf). */}}
{{- define "tasks.otlpPort" -}}
{{- $u := urlParse .Values.otel.endpoint -}}
{{- $hostport := splitList ":" $u.host -}}
{{- if gt (len $hostport) 1 -}}
{{- last $hostport -}}
{{- else if eq $u.scheme "https" -}}
443
{{- else if eq .Values.otel.protocol "grpc" -}}
4317
{{- else -}}
4318
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Validation that a JSON schema cannot express. Included by every template that
depends on it, so `helm template` fails early with a message naming the value.
--------------------------------------------------------------------------- */}}
{{- define "tasks.validate" -}}
{{- $pg := .Values.postgresql -}}
{{- $ext := .Values.externalDatabase -}}
{{- if and (not $pg.enabled) (not $ext.host) -}}
{{- fail "no database configured: set postgresql.enabled=true (in-chart PostgreSQL) or externalDatabase.host (external database)" -}}
{{- end -}}
{{- if and $pg.enabled $ext.host -}}
{{- fail "two databases configured: externalDatabase.host is set while postgresql.enabled=true; set postgresql.enabled=false to use the external database, or clear externalDatabase.host" -}}
{{- end -}}
{{- $prefix := include "tasks.database.authPrefix" . -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- if and $auth.existingSecret $auth.password -}}
{{- fail (printf "ambiguous database credentials: set only one of %s.existingSecret and %s.password" $prefix $prefix) -}}
{{- end -}}
{{- if not (or $auth.existingSecret $auth.password) -}}
{{- fail (printf "no database password: set %s.existingSecret (a Secret holding key %s.passwordKey) or %s.password; the chart never generates credentials" $prefix $prefix $prefix) -}}
{{- end -}}
{{- if and .Values.pdb.enabled (ne (toString .Values.pdb.minAvailable) "") -}}
{{- $replicas := int (include "tasks.minReplicas" .) -}}
{{- $min := toString .Values.pdb.minAvailable -}}
{{- $pods := 0 -}}
{{- if hasSuffix "%" $min -}}
{{- /* Kubernetes rounds a percentage of pods up: ceil(p * replicas / 100). */ -}}
{{- $pods = div (add (mul (int (trimSuffix "%" $min)) $replicas) 99) 100 -}}
{{- else -}}
{{- $pods = int (include "tasks.int" .Values.pdb.minAvailable) -}}
{{- end -}}
{{- if ge (int $pods) $replicas -}}
{{- fail (printf "pdb.minAvailable (%v, %d pod(s)) must be lower than the replica count (%d), or the budget blocks every eviction (node drains hang)" .Values.pdb.minAvailable (int $pods) $replicas) -}}
{{- end -}}
{{- end -}}
{{- range $i, $env := .Values.extraEnv -}}
{{- if and $env.valueFrom $env.valueFrom.secretKeyRef -}}
{{- fail (printf "extraEnv[%d] (%s) reads a Secret into the environment; secrets are mounted as files (database.existingSecret, or extraVolumes with extraVolumeMounts), where a rotation needs no restart and the value stays out of the process environment" $i $env.name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int (include "tasks.int" .Values.autoscaling.minReplicas)) (int (include "tasks.int" .Values.autoscaling.maxReplicas))) -}}
{{- fail (printf "autoscaling.minReplicas (%v) is greater than autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- $cpu := int (include "tasks.int" .Values.autoscaling.targetCPUUtilizationPercentage) -}}
{{- $mem := int (include "tasks.int" .Values.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- if and .Values.autoscaling.enabled (eq (add $cpu $mem) 0) -}}
{{- fail "autoscaling.enabled needs a metric: set autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- if eq (include "tasks.int" .Values.config.http.port) (include "tasks.int" .Values.config.admin.port) -}}
{{- fail "config.http.port and config.admin.port must differ" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" -}}
{{- end -}}
{{- if and (eq $ext.sslmode "verify-full") (not $pg.enabled) (not $ext.caFile) -}}
{{- fail "externalDatabase.sslmode=verify-full needs externalDatabase.caFile (mount the CA with extraVolumes/extraVolumeMounts)" -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Shared pod-spec partial of the app pods (Deployment and Helm test pod):
identity, hardened security context, pull secrets and scheduling basics.
--------------------------------------------------------------------------- */}}
{{- define "tasks.podSpecCommon" -}}
automountServiceAccountToken: false
# No Docker-link variables: a Service named "tasks" would inject TASKS_SERVICE_HOST,
# TASKS_PORT_8080_TCP… into the TASKS_ namespace the configuration owns.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.podSecurityContext.runAsUser }}
  runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
  fsGroup: {{ .Values.podSecurityContext.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Hardened container securityContext (app and test containers). */}}
{{- define "tasks.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
