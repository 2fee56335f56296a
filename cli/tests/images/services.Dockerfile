# Test image `services`: the node image with the registry services installed
# the way their install steps would (postgres and redis from Debian,
# code-server from npm), so their pods start without the network.
FROM node
RUN apt-get update && apt-get install -y --no-install-recommends postgresql redis-server build-essential python3 pkg-config libkrb5-dev
RUN npm install -g --unsafe-perm --no-audit code-server@4.89.1
