# The purchase API image: Debian bookworm with the same packages as
# `make deps`. docker-compose.yml runs it three times: as the two pools of
# FastCGI responders (spawn-fcgi + multiwatch) and as nginx in front of them
# (three times more in its ha profile, which also builds the pgautofailover
# stage below).

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

# The ha profile's PostgreSQL (docker-compose.yml): Debian's PostgreSQL 15
# and pg_auto_failover, each container a monitor or a data node run by
# pg_autoctl, as postgres, its files in postgres's home (the node's volume).
# Built for that profile (target pgautofailover). The app image does not
# need it: BuildKit skips it there, Docker's legacy builder builds it too.
FROM debian:bookworm-slim AS pgautofailover
# No cluster made by the package: pg_autoctl makes its own.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-common \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends postgresql-15 postgresql-15-auto-failover \
        pg-auto-failover-cli \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV LANG=C.UTF-8 PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/pgdata
USER postgres
WORKDIR /var/lib/postgresql
EXPOSE 5432

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
