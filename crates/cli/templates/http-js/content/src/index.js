// An HTTP component: greets with the `greeting` variable and counts visits
// in the default key-value store.
import { Store } from 'fermyon:spin/key-value@2.0.0';
import { get as variable } from 'fermyon:spin/variables@2.0.0';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

async function handle(request) {
  const store = Store.open('default');
  const previous = store.get('visits');
  const visits = (previous ? parseInt(decoder.decode(previous), 10) : 0) + 1;
  store.set('visits', encoder.encode(String(visits)));
  const greeting = variable('greeting');
  console.log(`Handling request to ${request.url}`);
  return new Response(`${greeting} from JavaScript (visit ${visits})\n`, {
    status: 200,
    headers: { 'content-type': 'text/plain' },
  });
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
