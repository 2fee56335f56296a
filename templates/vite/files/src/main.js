document.querySelector("#app").innerHTML = `
  <h1>Hello from Vite on Pinacle</h1>
  <p>Edit <code>src/main.js</code> and save: the page reloads.</p>
`;
