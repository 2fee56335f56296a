export default function Home() {
  return (
    <main>
      <h1>Hello from Next.js on Pinacle</h1>
      <p>Edit app/page.js and save: the page reloads.</p>
    </main>
  );
}
