{{/*
Names, labels, addresses and the hardened pieces every pod template shares.
*/}}

{{- define "memcluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every object. Kept to 40 characters: KubeRay derives pod and
service names from the RayCluster name (<name>-head-svc, <name>-<group>-worker-<hash>).
*/}}
{{- define "memcluster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "memcluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "redis").
*/}}
{{- define "memcluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memcluster.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The standard labels every object carries. Call with (dict "ctx" $ "component" "redis").
*/}}
{{- define "memcluster.labels" -}}
{{ include "memcluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: memcluster
helm.sh/chart: {{ include "memcluster.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select every pod of this release (for the NetworkPolicy). */}}
{{- define "memcluster.releaseSelector" -}}
app.kubernetes.io/name: {{ include "memcluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "memcluster.clusterName" -}}
{{- default (include "memcluster.fullname" .) .Values.memcluster.clusterName }}
{{- end }}

{{- define "memcluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "memcluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- Ray ---- */}}

{{- define "memcluster.rayClusterName" -}}
{{- include "memcluster.fullname" . }}
{{- end }}

{{/* The head Service KubeRay creates for a RayCluster. */}}
{{- define "memcluster.rayHeadService" -}}
{{- printf "%s-head-svc" (include "memcluster.rayClusterName" .) }}
{{- end }}

{{- define "memcluster.rayHeadHost" -}}
{{- printf "%s.%s.svc.%s" (include "memcluster.rayHeadService" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Ray Client address of the head: what `memcluster up` and remote drivers use. */}}
{{- define "memcluster.rayAddress" -}}
{{- printf "ray://%s:10001" (include "memcluster.rayHeadHost" .) }}
{{- end }}

{{- define "memcluster.rayTokenSecretName" -}}
{{- default (printf "%s-ray-token" (include "memcluster.fullname" .)) .Values.ray.auth.existingSecret }}
{{- end }}

{{- define "memcluster.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{/* ---------------------------------------------------------------- Redis -- */}}

{{- define "memcluster.redisServiceName" -}}
{{- printf "%s-redis" (include "memcluster.fullname" .) }}
{{- end }}

{{- define "memcluster.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- default (printf "%s-redis" (include "memcluster.fullname" .)) .Values.redis.auth.existingSecret }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "memcluster.redisSecretKey" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.externalRedis.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* host:port of Redis. */}}
{{- define "memcluster.redisHostPort" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s.%s.svc.%s:6379" (include "memcluster.redisServiceName" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- $url := urlParse .Values.externalRedis.url }}
{{- if contains ":" $url.host }}
{{- $url.host }}
{{- else }}
{{- printf "%s:6379" $url.host }}
{{- end }}
{{- end }}
{{- end }}

{{- define "memcluster.redisScheme" -}}
{{- if .Values.redis.enabled }}redis{{ else }}{{ (urlParse .Values.externalRedis.url).scheme }}{{ end }}
{{- end }}

{{/*
The redis_url memcluster gets: the password is a ${REDIS_PASSWORD} reference that each
process resolves from its environment (injected from the Secret), never a literal.
*/}}
{{- define "memcluster.redisUrl" -}}
{{- $db := "/0" }}
{{- $user := "" }}
{{- if not .Values.redis.enabled }}
{{- $path := (urlParse .Values.externalRedis.url).path }}
{{- if and $path (ne $path "/") }}{{ $db = $path }}{{ end }}
{{- $user = .Values.externalRedis.username }}
{{- end }}
{{- printf "%s://%s:${REDIS_PASSWORD}@%s%s" (include "memcluster.redisScheme" .) $user (include "memcluster.redisHostPort" .) $db }}
{{- end }}

{{/* ------------------------------------------------- security and pods ---- */}}

{{/*
A container securityContext: the values' settings with the hardened fields forced on top,
so values can never weaken them. Call with the values' securityContext dict.
*/}}
{{- define "memcluster.containerSecurityContext" -}}
{{- $hardened := dict "allowPrivilegeEscalation" false "privileged" false "runAsNonRoot" true "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mustMergeOverwrite (deepCopy (default (dict) .)) $hardened) }}
{{- end }}

{{/* A pod securityContext: values plus runAsNonRoot and RuntimeDefault seccomp. */}}
{{- define "memcluster.podSecurityContext" -}}
{{- $hardened := dict "runAsNonRoot" true "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mustMergeOverwrite (deepCopy (default (dict) .)) $hardened) }}
{{- end }}

{{/* Where the install init container puts memcluster. */}}
{{- define "memcluster.installDir" -}}/opt/memcluster{{- end }}

{{/* The `memcluster` command: from the install dir, or the image's PATH. */}}
{{- define "memcluster.command" -}}
{{- if .Values.install.enabled }}{{ include "memcluster.installDir" . }}/bin/memcluster{{ else }}memcluster{{ end }}
{{- end }}

{{/* The init container that pip-installs memcluster into the shared emptyDir. */}}
{{- define "memcluster.installInitContainer" -}}
{{- if .Values.install.enabled -}}
- name: install-memcluster
  image: {{ include "memcluster.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -m
    - pip
    - install
    - --no-cache-dir
    - --no-deps
    - --disable-pip-version-check
    - --no-input
    - --target
    - {{ include "memcluster.installDir" . }}
    {{- range .Values.install.extraPipArgs }}
    - {{ . | quote }}
    {{- end }}
    {{- range .Values.install.packages }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: HOME
      value: /tmp
  resources:
    {{- toYaml .Values.install.resources | nindent 4 }}
  securityContext:
    {{- include "memcluster.containerSecurityContext" (dict "readOnlyRootFilesystem" true) | nindent 4 }}
  volumeMounts:
    - name: memcluster-install
      mountPath: {{ include "memcluster.installDir" . }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end }}

{{/*
Environment of every memcluster process: the Redis password (for ${REDIS_PASSWORD} in
redis_url), the cluster name, the install dir on PYTHONPATH, and extraEnv.
*/}}
{{- define "memcluster.env" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "memcluster.redisSecretName" . }}
      key: {{ include "memcluster.redisSecretKey" . }}
- name: MEMCLUSTER_CLUSTER
  value: {{ include "memcluster.clusterName" . | quote }}
{{- if .Values.install.enabled }}
- name: PYTHONPATH
  value: {{ include "memcluster.installDir" . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes for the install dir and /tmp, shared by the Ray pods and the Job. */}}
{{- define "memcluster.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "memcluster.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- if .Values.install.enabled }}
- name: memcluster-install
  emptyDir: {}
{{- end }}
{{- end }}

{{- define "memcluster.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/memcluster
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.install.enabled }}
- name: memcluster-install
  mountPath: {{ include "memcluster.installDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------- checks ------ */}}

{{/*
Cross-field checks that values.schema.json cannot express; each fails with the field.
*/}}
{{- define "memcluster.validate" -}}
{{- if not .Values.redis.enabled }}
{{- if not .Values.externalRedis.url }}
{{- fail "externalRedis.url: required when redis.enabled is false" }}
{{- end }}
{{- if not .Values.externalRedis.existingSecret }}
{{- fail "externalRedis.existingSecret: required when redis.enabled is false (a Secret with the Redis password)" }}
{{- end }}
{{- end }}
{{- $groups := dict }}
{{- range $i, $g := .Values.ray.workerGroups }}
{{- if hasKey $groups $g.name }}
{{- fail (printf "ray.workerGroups[%d].name: %q is used twice" $i $g.name) }}
{{- end }}
{{- $_ := set $groups $g.name true }}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) }}
{{- fail (printf "ray.workerGroups[%d].replicas: must be between minReplicas and maxReplicas" $i) }}
{{- end }}
{{- end }}
{{- $sources := dict }}
{{- $defaults := 0 }}
{{- range $i, $s := .Values.memcluster.sources }}
{{- if hasKey $sources $s.name }}
{{- fail (printf "memcluster.sources[%d].name: %q is used twice" $i $s.name) }}
{{- end }}
{{- $_ := set $sources $s.name true }}
{{- if $s.default }}{{ $defaults = add1 $defaults }}{{ end }}
{{- $shards := int (default 1 $s.shards) }}
{{- if and (hasKey $s "replicas") (not (kindIs "invalid" $s.replicas)) }}
{{- if gt (int $s.replicas) $shards }}
{{- fail (printf "memcluster.sources[%d].replicas: must be <= shards (%d); each replica lives on a different shard" $i $shards) }}
{{- end }}
{{- if and (hasKey $s "write_quorum") (not (kindIs "invalid" $s.write_quorum)) }}
{{- if gt (int $s.write_quorum) (int $s.replicas) }}
{{- fail (printf "memcluster.sources[%d].write_quorum: must be <= replicas" $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt $defaults 1 }}
{{- fail "memcluster.sources: at most one source may be the default" }}
{{- end }}
{{- end }}
