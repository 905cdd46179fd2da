/**
 * Unit tests of the frontend's pure logic and model (no browser, no
 * JupyterLab runtime): ts-jest compiles the `__tests__/*.spec.ts` files under src.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testRegex: '/__tests__/.*\\.spec\\.tsx?$',
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  moduleFileExtensions: ['ts', 'tsx', 'js', 'json']
};
