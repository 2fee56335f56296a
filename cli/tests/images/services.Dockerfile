# Test image `services`: the base image with the registry services that
# come from Debian, so their pods start without the network.
FROM base
RUN apt-get update && apt-get install -y --no-install-recommends postgresql redis-server
