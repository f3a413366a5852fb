# System packages for the deployment tests: a real nginx in front of the instances.
# `make nginx` installs Debian's package when /usr/sbin/nginx is missing (needs root, or sudo).
NGINX ?= /usr/sbin/nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: nginx

nginx: ## Install nginx (Debian package) for the tests through a real proxy, if missing
	@if [ ! -x $(NGINX) ]; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y nginx \
	  || { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y nginx; }; \
	fi
