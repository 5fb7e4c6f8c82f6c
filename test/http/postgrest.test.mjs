// The replay itself (postgrest.mjs) against PostgREST v12's own expectations
// (test/spec/Feature/Query/RpcSpec.hs, "procs with VARIADIC params" and
// "repeated params"), on copies of its fixture functions; and the PostgreSQL
// rule that keeps tokex from receiving a repeated audience through VARIADIC.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseForm } from './postgrest.mjs';
import { request, routines, sql } from './lib.mjs';

const S = 'pgrst_spec';
const call = (fn, params, opts = {}) => request(fn, params, { schema: S, ...opts });

before(() => {
  sql(`SET client_min_messages = warning;
       DROP SCHEMA IF EXISTS ${S} CASCADE; CREATE SCHEMA ${S};
       CREATE FUNCTION ${S}.variadic_param(VARIADIC v text[] DEFAULT '{}') RETURNS text[]
         IMMUTABLE LANGUAGE sql AS $$ SELECT v $$;
       CREATE FUNCTION ${S}.sayhello(name text) RETURNS text
         IMMUTABLE LANGUAGE sql AS $$ SELECT 'Hello, ' || name $$;
       CREATE FUNCTION ${S}.sayhello_variadic(name text, VARIADIC v text[]) RETURNS text
         IMMUTABLE LANGUAGE sql AS $$ SELECT 'Hello, ' || name $$;
       -- the shape tokex_api.token would need: optional parameters, then VARIADIC
       CREATE FUNCTION ${S}.optional_then_variadic(a text DEFAULT NULL, b text DEFAULT NULL,
                                                   VARIADIC v text[] DEFAULT NULL) RETURNS jsonb
         VOLATILE LANGUAGE sql AS $$ SELECT jsonb_build_object('a', a, 'b', b, 'v', v) $$;
       CREATE FUNCTION ${S}.echo(a text DEFAULT NULL, b text DEFAULT NULL) RETURNS jsonb
         VOLATILE LANGUAGE sql AS $$ SELECT jsonb_build_object('a', a, 'b', b) $$;
       GRANT USAGE ON SCHEMA ${S} TO anon; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${S} TO anon;`);
  routines(S, { reload: true });
});
after(() => sql(`SET client_min_messages = warning; DROP SCHEMA IF EXISTS ${S} CASCADE`));

describe('PostgREST v12 RpcSpec: VARIADIC and repeated parameters', () => {
  test('GET n=0 goes through the DEFAULT', () => {
    assert.deepEqual(call('variadic_param', {}, { method: 'GET' }).body, []);
  });
  test('GET and form POST, n=1 and n>1: every value, in order', () => {
    for (const method of ['GET', 'POST']) {
      assert.deepEqual(call('variadic_param', 'v=hi', { method }).body, ['hi']);
      assert.deepEqual(call('variadic_param', 'v=hi&v=there', { method }).body, ['hi', 'there']);
    }
  });
  test('a repeated parameter without VARIADIC: the last value wins', () => {
    assert.deepEqual(call('sayhello', 'name=ignored&name=world', { method: 'GET' }).body, 'Hello, world');
    assert.deepEqual(call('echo', 'a=1&b=2&a=3').body, { a: '3', b: '2' });
  });
  test('repeated non-variadic parameter in a function with a VARIADIC one: the last value wins', () => {
    assert.deepEqual(call('sayhello_variadic', 'name=ignored&name=world&v=unused', { method: 'GET' }).body,
                     'Hello, world');
  });
  test('an unknown key: 404 PGRST202, the function is not called', () => {
    const r = call('echo', 'a=1&c=2');
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 'PGRST202');
  });
});

// PostgreSQL resolves a named call with VARIADIC only if the VARIADIC argument
// sits at its own position (every parameter before it passed); a named call
// without VARIADIC never matches a variadic function.  PostgREST passes only
// the keys a request sent, so such a function answers 404 unless a request
// sends every parameter.  This is why tokex_api.token cannot take audience as
// VARIADIC, and learns about a repeated audience from the proxy instead.
describe('optional parameters before a VARIADIC one (what a VARIADIC audience would do)', () => {
  test('every parameter sent: called, with every value', () => {
    assert.deepEqual(call('optional_then_variadic', 'a=1&b=2&v=x&v=y').body, { a: '1', b: '2', v: ['x', 'y'] });
  });
  test('an optional parameter omitted: PostgreSQL finds no function (404)', () => {
    for (const form of ['a=1&v=x&v=y', 'v=x', 'a=1', 'a=1&b=2']) {
      const r = call('optional_then_variadic', form);
      assert.equal(r.status, 404, `${form}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, '42883', form);
    }
  });
});

describe('form parsing (http-types parseSimpleQuery)', () => {
  test("'&' and ';' separate, '+' is a space, keys and values are percent-decoded", () => {
    assert.deepEqual(parseForm('a=1;b=x+y&%61udience=%C3%A9&c'), [['a', '1'], ['b', 'x y'], ['audience', 'é'], ['c', '']]);
    assert.deepEqual(parseForm('?a=%zz&a=%4'), [['a', '%zz'], ['a', '%4']]);
    assert.deepEqual(call('echo', 'a=x+y;b=%2B').body, { a: 'x y', b: '+' });
  });
});
