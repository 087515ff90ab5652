/** Heap measurements that mean something: a real gc() before reading, even under tsx. */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// tsx runs without --expose-gc; the flag can still be set at run time, and a fresh context then
// sees `gc`.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Bytes of live heap after two full collections (the second catches what finalizers freed). */
export function heapUsed(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}
