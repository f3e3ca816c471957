{{/* Object names are fixed ("kaito-" + name, as kustomize's namePrefix): the controller's
defaults name the webhook Service, Secret and configurations it manages. */}}
{{- define "kaito.name" -}}
{{- printf "kaito-%s" .name -}}
{{- end -}}

{{/* Labels on every object: kustomize's common labels plus Helm's bookkeeping. */}}
{{- define "kaito.labels" -}}
app.kubernetes.io/name: kaito
app.kubernetes.io/part-of: kaito
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kaito.featureGates" -}}
{{- $gates := list -}}
{{- range $k, $v := .Values.featureGates -}}
{{- $gates = append $gates (printf "%s=%t" $k $v) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}

{{- define "kaito.selfSignedCerts" -}}
{{- if eq .Values.webhook.certs "self-signed" -}}true{{- else if eq .Values.webhook.certs "cert-manager" -}}{{- else -}}
{{- fail (printf "webhook.certs %q: use self-signed or cert-manager" .Values.webhook.certs) -}}
{{- end -}}
{{- end -}}

{{/* Pod template metadata: the user's podAnnotations and podLabels, then the component label
(which a podLabels entry cannot replace: the Deployment's selector depends on it).
Call with (dict "v" <component values> "component" <name>). */}}
{{- define "kaito.podMetadata" -}}
{{- with .v.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
labels:
  {{- with omit (.v.podLabels | default dict) "app.kubernetes.io/component" }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Where a kaito Pod may run and what it pulls with; renders nothing at the defaults, so the
default render stays identical to config/default. Call with (dict "v" <component values> "root" .). */}}
{{- define "kaito.podPlacement" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The controller image; an empty image.repository fails the install with the fix, since kaito
publishes no image a default could name. */}}
{{- define "kaito.image" -}}
{{- if not .Values.image.repository -}}
{{- fail "image.repository is empty: kaito publishes no images. Build one with `hack/images.sh controller`, push it to your registry and set image.repository (and image.tag), e.g. --set image.repository=myregistry.example/kaito/workspace (docs/images.md)" -}}
{{- end -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The image of a workload kaito writes (inference, tuning): the value if set, else the image
named NAME beside image.repository, with image.tag. Call with (dict "root" . "value" <value> "name" NAME). */}}
{{- define "kaito.workloadImage" -}}
{{- if .value -}}
{{ .value }}
{{- else -}}
{{- $parts := splitList "/" .root.Values.image.repository -}}
{{- $dir := $parts | initial | join "/" -}}
{{ if $dir }}{{ $dir }}/{{ end }}{{ .name }}:{{ .root.Values.image.tag }}
{{- end -}}
{{- end -}}

{{/*
The karpenterProviders entry karpenterProvider names, as JSON ("{}" when none is set or another
node provisioner is chosen, which would not read the flags): the controller's node class flags
and its RBAC both read it. Refused with karpenterNodeClass, and for a name karpenterProviders
lacks.
*/}}
{{- define "kaito.karpenterProvider" -}}
{{- $name := .Values.karpenterProvider | default "" -}}
{{- if $name -}}
{{- if .Values.karpenterNodeClass -}}
{{- fail "karpenterNodeClass and karpenterProvider are exclusive: karpenterProvider's classes are created by kaito, karpenterNodeClass references one existing class; set one" -}}
{{- end -}}
{{- $provider := index (.Values.karpenterProviders | default dict) $name -}}
{{- if not $provider -}}
{{- fail (printf "karpenterProvider %q has no entry in karpenterProviders (add one with nodeClassAPI, resource and nodeClasses)" $name) -}}
{{- end -}}
{{- if eq .Values.nodeProvisioner "karpenter" -}}
{{- $provider | toJson -}}
{{- else -}}
{}
{{- end -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}
