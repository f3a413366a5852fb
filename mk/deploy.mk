# Deployment: the nginx the tests put in front of several instances (tests/scale/).
# Included by the main Makefile. Debian's package; installed only if missing (root or sudo).

NGINX ?= /usr/sbin/nginx
NGINX_APT := DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get

.PHONY: nginx

nginx: ## Install nginx (Debian package) for the tests through a real proxy, if missing
	@if [ -x "$(NGINX)" ]; then echo "nginx: $(NGINX)"; \
	else $(NGINX_APT) install -y nginx || { $(NGINX_APT) update && $(NGINX_APT) install -y nginx; }; fi
