import { validateArchPlugin } from '@cocokit/sdk';
import { runArchConformance } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import pkvm from './index.js';

runArchConformance(pkvm);

describe('the pkvm plugin', () => {
  it('is a valid plugin of contract version 1 serving vm type pkvm', () => {
    expect(validateArchPlugin(pkvm, 'test')).toBe(pkvm);
    expect(pkvm.name).toBe('pkvm');
    expect(pkvm.vmTypes).toEqual(['pkvm']);
    expect(pkvm.apiVersion).toBe(1);
  });
});
