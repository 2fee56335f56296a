const http = require("node:http");

const port = Number(process.env.PORT || 3000);

http
  .createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("Hello from your Pinacle pod\n");
  })
  .listen(port, "0.0.0.0", () => console.log(`listening on http://localhost:${port}`));
