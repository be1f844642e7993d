# The purchase API image: Debian bookworm with the same packages as
# `make deps`. docker-compose.yml runs it three times: as the two pools of
# FastCGI responders (spawn-fcgi + multiwatch) and as nginx in front of them.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make pkg-config libc6-dev \
        libfcgi-dev libhiredis-dev libpq-dev libjson-c-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include include
COPY app app
RUN make all

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfcgi0ldbl libfcgi-bin libhiredis0.14 \
        libpq5 libjson-c5 spawn-fcgi multiwatch nginx curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin stock
COPY --from=build /src/build/stock-fcgi /usr/local/bin/stock-fcgi
COPY nginx /usr/local/share/stock-api/nginx
# The responders' socket directory, shared with the nginx container through
# a volume (a new volume starts as a copy of it): the workers (user stock)
# create their shared metrics file in it, and nginx's workers (group
# www-data) pass through it to the sockets. docker-compose.yml sets it so
# again at every start, for a volume made by an older image.
RUN install -d -o stock -g www-data -m 0750 /run/stock
CMD ["/usr/local/bin/stock-fcgi", "--help"]
